"""Device choice (core/device.py): a device this machine lacks is refused by name, never replaced
by another one; a run records the device it resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.contract.spec import HardenSpec
from core.device import pick_device, supports_bfloat16, use_device
from core.errors import DeviceError
from core.pipeline import run
from tests.core.model_files import write_model

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", "cuda:", "tpu", "cuda:1:2", "cpu0"])
def test_a_malformed_device_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(DeviceError) as raised:
        pick_device(name)
    assert f"{name!r} is not a device name" in raised.value.message
    assert "HARDEN_DEVICE" in str(raised.value) and raised.value.code == "device_unavailable"


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_a_gpu_this_machine_lacks_is_refused_not_replaced(name: str) -> None:
    with pytest.raises(DeviceError, match="no usable CUDA GPU") as raised:
        pick_device(name)
    assert "HARDEN_DEVICE" in raised.value.hint


@no_cuda
def test_unset_means_the_cpu_here_and_the_cpu_gets_no_gpu_settings() -> None:
    assert pick_device(None) == pick_device("") == pick_device(" CPU ") == torch.device("cpu")
    benchmark = torch.backends.cudnn.benchmark
    use_device(torch.device("cpu"), cudnn_benchmark=not benchmark)
    assert torch.backends.cudnn.benchmark == benchmark
    assert not supports_bfloat16(torch.device("cpu"))  # CPU bf16 only when asked for


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_second_gpu_is_used_as_named() -> None:  # pragma: no cover - GPU workers only
    device = pick_device("cuda:1")
    use_device(device)
    assert device == torch.device("cuda", 1) and torch.cuda.current_device() == 1
    assert torch.zeros(1, device="cuda").device == device


@no_cuda
def test_a_job_told_a_missing_gpu_fails_before_writing_and_a_run_records_its_device(
    tmp_path: Path,
) -> None:
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:digits",
            "teacher_epochs": 0,
            "student_epochs": 1,
            "evaluation": {"enabled": False},
        }
    )
    model_file = write_model("torchscript", tmp_path)
    with pytest.raises(DeviceError, match="cuda:7"):
        run(spec, model_file, None, tmp_path / "refused", device="cuda:7")
    assert not (tmp_path / "refused").exists()
    # bfloat16 on the CPU only when asked for; the report says what training used.
    report = run(
        spec, model_file, None, tmp_path / "out", device="cpu", precision="bfloat16"
    ).report
    assert report.device == "cpu"
    assert report.compute == {
        "training_precision": "bfloat16", "channels_last": False, "cudnn_benchmark": False,
    }  # fmt: skip
