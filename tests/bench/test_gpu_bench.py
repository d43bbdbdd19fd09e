"""bench/gpu.py at its tiny size on the CPU: every part runs and reports what it measured, and
the comparison with torchattacks is skipped, saying so, where torchattacks is not installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import bench.gpu as gpu
import bench.gpu_attacks as gpu_attacks


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_the_tiny_run_measures_every_part_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = gpu.main(["--tiny", "--device", "cpu", "--json", str(tmp_path / "gpu.json")])
    assert json.loads((tmp_path / "gpu.json").read_text())["device"] == "cpu"
    # (a) both methods against the plain loop, under the CPU's options only.
    training = out["training"]
    assert training["compute"] == {
        "training_precision": "float32", "channels_last": False, "cudnn_benchmark": False,
    }  # fmt: skip
    for method in ("distillation", "adversarial"):
        row = training[method]
        assert _positive(row["plain_s"]) and _positive(row["ours_s"])
        assert row["ratio"] == pytest.approx(row["plain_s"] / row["ours_s"])
    assert set(out["options"]) == {"all off (float32)", "bfloat16 autocast"}
    assert out["options"]["all off (float32)"]["speedup"] == 1.0
    # (b) the three attacks, with success rates in [0, 1]; torchattacks' side only if installed.
    rows = {row["name"]: row for row in out["attacks"]["rows"]}
    assert set(rows) == {"pgd", "apgd", "cw_l2"}
    for row in rows.values():
        assert _positive(row["ours_s"]) and 0 <= row["ours_success"] <= 1
        assert (row["peer_s"] is not None) == out["torchattacks"]
    # (c) the job ran end to end and its report says where and on how many samples.
    job = out["job"]
    assert job["device"] == "cpu" and job["evaluation_samples"] == 8
    assert {"student", "export", "evaluate"} <= set(job["timings_s"])
    printed = capsys.readouterr().out
    assert "(a) distillation" in printed and "(c) default job" in printed


def test_without_torchattacks_part_b_times_ours_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_attacks, "torchattacks_available", lambda: False)
    monkeypatch.setattr(gpu, "torchattacks_available", lambda: False)
    out = gpu.main(["--tiny", "--device", "cpu", "--parts", "b"])
    assert "torchattacks is not installed" in capsys.readouterr().out
    assert all(
        row["peer_s"] is None and row["speed_ratio"] is None for row in out["attacks"]["rows"]
    )
    assert "training" not in out and "job" not in out
