"""The job resource: its documentation and links agree with the names in core.names, its
committed JSON Schema is current, and a succeeded job carries its verdict."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from app.infra.db import Job, JobState
from app.infra.job_resource import ARTIFACT_TYPES, JobOut, job_json_schema, job_links, job_out
from app.web.api_docs import SUCCEEDED
from core.contract.methods import stage_names
from core.names import ARTIFACT_NAMES

JOB_SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "job.schema.json"


def test_the_stage_description_lists_every_pipeline_stage_in_order():
    description = JobOut.model_fields["stage"].description or ""
    listed = description.split(": ", 1)[1].split(" (", 1)[0]
    assert re.findall(r"[a-z_]+", listed.replace(" or ", ", ")) == list(stage_names())
    assert {"load", "teacher", "soft_labels", "student", "training", "report"} <= set(stage_names())


def test_every_artifact_has_a_media_type_and_a_download_link():
    assert tuple(ARTIFACT_TYPES) == ARTIFACT_NAMES
    links = job_links("abc")
    assert {name: links[name] for name in ARTIFACT_NAMES} == {
        name: f"/jobs/abc/{name}" for name in ARTIFACT_NAMES
    }


def test_the_committed_job_schema_is_up_to_date():
    committed = json.loads(JOB_SCHEMA_FILE.read_text())
    assert committed == json.loads(json.dumps(job_json_schema())), (
        "schemas/job.schema.json is stale: run `python -m app.infra.job_resource > "
        "schemas/job.schema.json`"
    )


def test_a_succeeded_job_carries_its_verdict_and_validates_against_the_schema():
    schema = json.loads(JOB_SCHEMA_FILE.read_text())
    jsonschema.validate(SUCCEEDED, schema)
    assert SUCCEEDED["verdict"]["label"] == "masked"
    assert set(SUCCEEDED["verdict"]["clean_accuracy"]) == {"uploaded", "student"}
    # The verdict is shown once the job succeeded, never for a job that has not.
    running = Job(**{**_row(SUCCEEDED), "state": JobState.running})
    assert job_out(running).verdict is None
    broken = dict(SUCCEEDED["verdict"], label="robust")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(SUCCEEDED, verdict=broken), schema)


def _row(job: dict) -> dict:
    """The job row behind an example of the job resource."""
    return {
        "id": job["id"], "owner": "alice", "state": job["state"], "stage": job["stage"],
        "progress": job["progress"], "spec": job["spec"], "model_sha256": job["model_sha256"],
        "model_format": job["model_format"], "dataset_sha256": None, "cancel_requested": False,
        "attempts": job["attempts"], "created_at": datetime.fromisoformat(job["created_at"]),
        "artifacts": {name: a["sha256"] for name, a in job["artifacts"].items()},
        "verdict": job["verdict"],
    }  # fmt: skip


def test_a_running_job_has_an_eta_from_its_pace_and_no_other_does():
    started = datetime.fromisoformat("2026-01-01T10:00:00+00:00")
    row = _row(SUCCEEDED) | {"state": JobState.running, "started_at": started}

    def eta(progress: float, seconds: float, **changes: object) -> int | None:
        job = Job(**(row | {"progress": progress} | changes))
        return job_out(job, now=started + timedelta(seconds=seconds)).eta_s

    # A quarter done in 100 s: 300 s to go; half done in 100 s: 100 s to go.
    assert eta(0.25, 100) == 300 and eta(0.5, 100) == 100 and eta(1.0, 60) == 0
    # Too early to tell: under 1% done or under 5 s running.
    assert eta(0.005, 100) is None and eta(0.5, 3) is None
    # Queued or ended: no ETA.
    assert eta(0.5, 100, state=JobState.queued) is None
    assert eta(1.0, 100, state=JobState.succeeded) is None
    assert eta(0.5, 100, started_at=None) is None
