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
from core.contract.job_plan import job_plan, overall_progress, progress_stages
from core.contract.methods import stage_names
from core.contract.spec import HardenSpec
from core.names import ARTIFACT_NAMES
from worker.progress import ProgressReporter

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


def _simulate(
    spec: HardenSpec, seconds_per_pass: dict[str, float]
) -> list[tuple[float, str, float, float]]:
    """A job of ``spec`` on a fake clock, as the worker reports it: each stage reports its
    progress in ten steps through a ProgressReporter over the job's stages, and takes its
    planned work times ``seconds_per_pass[stage]`` (default 1 ms), or its fixed seconds.
    Returns (time, stage, stored progress, true seconds left) after every write."""
    plan = job_plan(spec)
    durations = {
        stage: plan.fixed_s.get(stage, 0.0)
        + plan.work.get(stage, 0.0) * seconds_per_pass.get(stage, 1e-3)
        for stage in plan.order
    }
    end = sum(durations.values())
    clock = [0.0]
    writes: list[tuple[float, str, float, float]] = []
    reporter = ProgressReporter(
        lambda stage, progress: writes.append((clock[0], stage, progress, end - clock[0])),
        progress_stages(spec),
        interval_s=0.0,
        clock=lambda: clock[0],
    )
    for stage, duration in durations.items():
        for step in range(1, 11):
            clock[0] += duration / 10
            reporter(stage, step, 10)
    return writes


def _eta(job_spec: HardenSpec, elapsed: float, stage: str, progress: float, **changes: object):
    """The eta_s of a running job of ``job_spec`` ``elapsed`` seconds after it started."""
    started = datetime.fromisoformat("2026-01-01T10:00:00+00:00")
    row = _row(SUCCEEDED) | {
        "state": JobState.running, "started_at": started, "stage": stage, "progress": progress,
        "spec": job_spec.model_dump(mode="json"),
    }  # fmt: skip
    job = Job(**(row | changes))
    return job_out(job, now=started + timedelta(seconds=elapsed)).eta_s


JOB_SHAPES = {
    "default": HardenSpec(dataset="builtin:mnist"),
    "adversarial": HardenSpec(dataset="builtin:digits", method="adversarial"),
    "autoattack": HardenSpec(
        dataset="builtin:mnist",
        distillation={"student_epochs": 5},
        evaluation={"preset": "autoattack", "samples": 200},
    ),
}


@pytest.mark.parametrize("shape", sorted(JOB_SHAPES))
@pytest.mark.parametrize("speed", [1e-4, 1e-3, 5e-2])
def test_at_a_steady_pace_the_eta_is_the_time_left(shape: str, speed: float) -> None:
    # A machine that does the planned work at any steady pace, fast or slow: the ETA is the
    # time the job really has left, from the first stage after loading to the end.
    spec = JOB_SHAPES[shape]
    for elapsed, stage, progress, left in _simulate(
        spec, dict.fromkeys(job_plan(spec).work, speed)
    ):
        eta = _eta(spec, elapsed, stage, progress)
        if stage == "load" or elapsed < 5:
            assert eta is None
        else:
            assert eta is not None and abs(eta - left) <= 1


def test_the_stage_shares_are_priced_not_fixed() -> None:
    # The same progress and time running mean different ETAs for jobs whose evaluation weighs
    # differently: the autoattack preset's is far more work than the default's, the job without
    # an evaluation has none left after its training.
    default = JOB_SHAPES["default"]
    after_training = overall_progress(progress_stages(default), "export", 0.0)
    assert after_training is not None
    autoattack = default.model_copy(update={"evaluation": JOB_SHAPES["autoattack"].evaluation})
    etas = {
        "default": _eta(default, 600, "export", after_training),
        "autoattack": _eta(autoattack, 600, "export", after_training),
    }
    assert etas["autoattack"] > 2 * etas["default"] > 0
    without = HardenSpec(dataset="builtin:mnist", evaluation={"enabled": False})
    at_export = overall_progress(progress_stages(without), "export", 0.0)
    assert at_export is not None
    none_left = _eta(without, 600, "export", at_export)
    assert none_left is not None and none_left < etas["default"] / 5


def test_a_slower_stage_shows_in_the_eta_once_it_runs() -> None:
    # The evaluation runs at half the pace the training did. The pace is the job's so far (its
    # work done over its time running), so the ETA learns of it as the evaluation goes: past its
    # middle, the ETA is the time left within 10% of the job's duration; a steady pace would have
    # promised less.
    spec = JOB_SHAPES["default"]
    writes = _simulate(spec, {"evaluate": 2e-3})
    steady = _simulate(spec, {})
    duration = writes[0][0] + writes[0][3]
    evaluating = [w for w in writes if w[1] == "evaluate"]
    for (t, stage, progress, left), (t_steady, *_) in zip(
        evaluating[len(evaluating) // 2 :],
        [w for w in steady if w[1] == "evaluate"][len(evaluating) // 2 :],
        strict=True,
    ):
        eta = _eta(spec, t, stage, progress)
        assert eta is not None and abs(eta - left) <= 0.1 * duration
        assert eta > (_eta(spec, t_steady, stage, progress) or 0)


def test_no_eta_while_queued_loading_or_ended_and_a_fallback_for_an_old_spec() -> None:
    spec = JOB_SHAPES["default"]
    assert _eta(spec, 100, "evaluate", 0.5, state=JobState.queued) is None
    assert _eta(spec, 100, "report", 1.0, state=JobState.succeeded) is None
    assert _eta(spec, 100, "evaluate", 0.5, started_at=None) is None
    assert _eta(spec, 100, "load", 0.015) is None and _eta(spec, 3, "evaluate", 0.5) is None
    # A spec this version no longer reads: the overall progress's own pace.
    assert _eta(spec, 100, "evaluate", 0.25, spec={"method": "gone"}) == 300
