"""The job resource's documentation and links agree with the names in core.names."""

from __future__ import annotations

import re

from app.infra.job_resource import ARTIFACT_TYPES, JobOut, job_links
from core.names import ARTIFACT_NAMES, STAGES


def test_the_stage_description_lists_every_pipeline_stage_in_order():
    description = JobOut.model_fields["stage"].description or ""
    assert re.findall(r"[a-z_]+", description.replace(" or ", ", ")) == list(STAGES)


def test_every_artifact_has_a_media_type_and_a_download_link():
    assert tuple(ARTIFACT_TYPES) == ARTIFACT_NAMES
    links = job_links("abc")
    assert {name: links[name] for name in ARTIFACT_NAMES} == {
        name: f"/jobs/abc/{name}" for name in ARTIFACT_NAMES
    }
