"""Checkpoint and resume (core.checkpoint): a run stopped part-way and run again from its
checkpoints ends with what a run never stopped ends with, for each kind of training."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.checkpoint import SUFFIX, Checkpoints
from core.contract.spec import HardenSpec
from core.errors import JobCancelledError
from core.names import CHECKPOINT_NAME
from core.pipeline import run
from core.report.schema import Report
from tests.core.model_files import write_model

_STOP = "stopped by the test"


def _spec(**overrides: object) -> HardenSpec:
    values: dict[str, object] = {
        "dataset": "builtin:digits",
        "temperature": 20.0,
        "teacher_epochs": 2,
        "student_epochs": 6,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "evaluation": {"enabled": False},
        "corruptions": {"enabled": False},
    }
    values.update(overrides)
    return HardenSpec.model_validate(values)


def _stop_at(stage: str, done_at_least: int) -> tuple[list[int], object]:
    """on_progress that raises (as a lost worker would stop) once ``stage`` reached a step."""
    seen: list[int] = []

    def on_progress(name: str, done: int, total: int) -> None:
        if name == stage:
            seen.append(done)
            if done >= done_at_least:
                raise JobCancelledError(_STOP, hint="")

    return seen, on_progress


def _run(spec: HardenSpec, model: Path, out: Path, **options: object) -> Report:
    return run(spec, model, None, out, device="cpu", **options).report  # type: ignore[arg-type]


def _same_outcome(resumed: Report, uninterrupted: Report) -> None:
    for role, summary in uninterrupted.models.items():
        assert resumed.models[role].clean_accuracy == summary.clean_accuracy, role
        assert resumed.models[role].mean_abs_logit == pytest.approx(
            summary.mean_abs_logit, rel=1e-6
        )
    first, again = resumed.model_dump(mode="json"), uninterrupted.model_dump(mode="json")
    for section in ("distillation", "robust_training"):
        if first.get(section) is not None:
            mine = {k: v for k, v in first[section].items() if "time" not in k}
            theirs = {k: v for k, v in again[section].items() if "time" not in k}
            assert mine == theirs, section


@pytest.mark.parametrize(
    ("overrides", "stage", "at"),
    [
        ({}, "student", 40),  # distillation, mid-student (the teacher's unit ended)
        ({}, "teacher", 30),  # distillation, mid-teacher
        (
            {"method": "adversarial", "robust": {"epochs": 3, "steps": 3, "epsilon": 0.1}},
            "training",
            30,
        ),
    ],
    ids=["distillation-student", "distillation-teacher", "adversarial"],
)
def test_a_run_resumed_from_its_checkpoints_ends_as_an_uninterrupted_one(
    overrides: dict[str, object], stage: str, at: int, tmp_path: Path
) -> None:
    spec = _spec(**overrides)
    model = write_model("torchscript", tmp_path)
    uninterrupted = _run(spec, model, tmp_path / "whole")

    saved: list[Path] = []
    saved_at: list[int] = []  # the stopped stage's step when each of its checkpoints was saved
    first = tmp_path / "attempt-1"
    seen, stop = _stop_at(stage, at)

    def on_checkpoint(path: Path) -> None:
        saved.append(path)
        if stage in path.name and seen:
            saved_at.append(seen[-1])

    with pytest.raises(JobCancelledError, match=_STOP):
        _run(
            spec, model, first / "out", checkpoint_dir=first / "checkpoints",
            checkpoint_every_s=0.0, on_checkpoint=on_checkpoint, on_progress=stop,
        )  # fmt: skip
    assert saved and all(CHECKPOINT_NAME.match(path.name) for path in saved)
    assert saved_at, "the stage saved no checkpoint before it was stopped"
    assert not list((first / "out").glob("report.json"))

    second = tmp_path / "attempt-2"
    resumed_saves: list[Path] = []
    progress: list[tuple[str, int, int]] = []
    resumed = _run(
        spec, model, second / "out", checkpoint_dir=second / "checkpoints",
        resume_from=first / "checkpoints", resumed_attempt=1, checkpoint_every_s=0.0,
        on_checkpoint=resumed_saves.append,
        on_progress=lambda *event: progress.append(event),  # type: ignore[arg-type]
    )  # fmt: skip
    _same_outcome(resumed, uninterrupted)
    assert any("resumed from the checkpoints of attempt 1" in note for note in resumed.notes)
    assert uninterrupted.resumed_from is None
    taken = resumed.resumed_from
    assert taken is not None and taken.attempt == 1 and taken.stage == stage
    assert not taken.ended and taken.epoch >= 1 and taken.epochs_not_retrained >= taken.epoch
    # Not retrained from zero: the stopped stage went on from its last checkpoint, so what was
    # trained again is what came after it (less than an epoch: every epoch saved).
    started = next(done for name, done, _ in progress if name == stage)
    assert started == saved_at[-1] > 0
    epoch_steps = saved_at[0] if len(saved_at) == 1 else saved_at[1] - saved_at[0]
    assert max(seen) - started < epoch_steps


def test_checkpoints_are_plain_tensors_and_json_never_a_pickle(tmp_path: Path) -> None:
    spec = _spec()
    model = write_model("torchscript", tmp_path)
    saved: list[Path] = []
    _run(
        spec, model, tmp_path / "out", checkpoint_dir=tmp_path / "ck", checkpoint_every_s=0.0,
        on_checkpoint=saved.append,
    )  # fmt: skip
    names = sorted({path.name for path in saved})
    assert names == [f"train-00-teacher{SUFFIX}", f"train-01-student{SUFFIX}"] or (
        names[0] == f"train-00-teacher{SUFFIX}" and names[1].startswith("train-01-student")
    )
    for path in {p for p in saved}:
        raw = path.read_bytes()
        header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
        values = json.loads(header["__metadata__"]["harden_checkpoint"])
        assert values["ended"] is True and values["losses"]
        tensors = load_file(str(path))
        assert all(isinstance(t, torch.Tensor) for t in tensors.values())
        assert b"\x80\x04" not in raw[:16]  # not a pickle stream


def test_a_resume_folder_without_a_units_file_trains_that_unit(tmp_path: Path) -> None:
    """An earlier attempt that saved nothing (or a folder emptied by retention) resumes nothing:
    the run is an ordinary one."""
    spec = _spec(teacher_epochs=1, student_epochs=2)
    model = write_model("torchscript", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    checkpoints = Checkpoints(tmp_path / "ck", resume_from=empty)
    assert checkpoints.load("train-00-teacher") is None
    report = _run(spec, model, tmp_path / "out", checkpoint_dir=tmp_path / "ck2", resume_from=empty)
    assert not any(note.startswith("resumed") for note in report.notes)
