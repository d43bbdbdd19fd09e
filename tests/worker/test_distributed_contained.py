"""A training over several processes (core.hardening.distributed) where the job's pipeline is
contained (worker/contained.py, worker/confine.py): its processes would talk over TCP, which the
confinement refuses, so the job fails at once with a DeviceError that says so and how to fix it,
not after its ranks waited on each other until a timeout. The worker refuses the setting with
containment on before any job (app/infra/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.infra.settings import Settings
from core.contract.spec import HardenSpec
from core.errors import HardenError
from core.pipeline import run
from tests.core.model_files import write_model
from worker.confine import landlock_abi
from worker.contained import Limits, run_contained


@pytest.mark.skipif(landlock_abi() < 4, reason="needs Landlock ABI 4 (TCP rules)")
def test_a_contained_job_cannot_train_over_two_processes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    model = write_model("torchscript", work / "inputs")
    spec = HardenSpec.model_validate(
        {"dataset": "builtin:digits", "teacher_epochs": 1, "student_epochs": 1}
    )
    with pytest.raises(HardenError) as raised:
        run_contained(
            run,
            (spec, model, None, work / "out"),
            {"device": "cpu", "training_processes": 2},
            work=work,
            readable=[],
            on_progress=lambda stage, done, total: None,
            should_cancel=lambda: False,
            limits=Limits(stall_timeout_s=120.0, memory_limit_bytes=8 << 30),
        )
    assert raised.value.code == "device_unavailable"
    assert "TCP" in raised.value.message and "HARDEN_TRAINING_PROCESSES=1" in raised.value.hint


def test_the_worker_refuses_several_training_processes_with_containment_on() -> None:
    with pytest.raises(ValueError, match="HARDEN_CONTAIN_MODELS=false"):
        Settings(training_processes=2, contain_models=True)  # type: ignore[call-arg]
    assert Settings(training_processes=2, contain_models=False).training_processes == 2  # type: ignore[call-arg]
    assert Settings().training_processes == 1  # type: ignore[call-arg]
