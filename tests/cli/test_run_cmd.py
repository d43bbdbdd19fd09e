"""``harden run``: options from the spec, a finished run's summary, and exit code 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from cli.run_options import build_spec, spec_options
from core.contract.spec import HardenSpec
from core.report.schema import Report
from tests.core.model_files import write_model

runner = CliRunner()


def test_options_cover_the_spec_scalars_and_hold_no_defaults() -> None:
    options = spec_options()
    assert {"temperature", "teacher_epochs", "student_epochs", "optimizer", "seed"} <= set(options)
    assert "architecture" in options and "onnx_opset" in options
    # Nothing given -> exactly the spec's own defaults.
    assert build_spec(None, None, dict.fromkeys(options), False) == HardenSpec()


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"temperature": 20, "seed": 3, "evaluation": {"samples": 7}}))
    spec = build_spec("builtin:digits", config, {"temperature": 40.0, "seed": None}, True)
    assert (
        spec.distillation.temperature == 40.0
        and spec.seed == 3
        and spec.dataset == "builtin:digits"
    )
    assert spec.evaluation.samples == 7 and not spec.evaluation.enabled


def test_run_writes_artifacts_and_prints_a_summary(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    out = tmp_path / "out"
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(out), "--no-evaluation",
            "--temperature", "20", "--teacher-epochs", "0", "--student-epochs", "2",
            "--batch-size", "32", "--learning-rate", "0.003", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((out / "report.json").read_text())
    section = report.spec["distillation"]
    assert section["temperature"] == 20.0 and section["student_epochs"] == 2
    assert (out / "model.onnx").is_file()
    assert "student" in result.stdout and "ONNX parity" in result.stdout
    steps = report.distillation.student_steps
    # 1,437 digits at batch 32, less the 143 held out when the check kept the scratch student
    check = report.distillation.student_check
    assert check is not None and check.held_out_samples == 143
    assert steps == 2 * (45 if check.fell_back else 41)
    assert f"student 2 epochs ({steps} optimizer steps; stopped: epochs as set" in result.stdout
    assert str(out / "model.onnx") in result.stdout


def test_the_summary_says_when_and_why_an_auto_student_stopped(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    out = tmp_path / "out"
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(out), "--no-evaluation",
            "--teacher-epochs", "0", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((out / "report.json").read_text())
    distillation = report.distillation
    assert report.spec["distillation"]["student_epochs"] is None
    assert distillation.student_epochs_auto
    assert (
        f"student {distillation.student_epochs} epochs ({distillation.student_steps} optimizer "
        f"steps; stopped: {distillation.student_stop}; output_scale)"
    ) in result.stdout
    check = distillation.student_check
    assert check is not None
    assert (
        f"scratch student check: {100 * check.scratch_accuracy:.1f}% on 143 held-out training "
        f"images vs the upload's {100 * check.upload_test_accuracy:.1f}%"
    ) in result.stdout


def test_an_invalid_option_exits_2_naming_the_field(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    result = runner.invoke(
        app, ["run", str(model), "--out", str(tmp_path / "o"), "--temperature", "0.5"]
    )
    assert result.exit_code == 2
    assert "temperature" in result.stderr and "greater than or equal to 1" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_model_that_does_not_fit_the_dataset_exits_2_with_a_hint(tmp_path: Path) -> None:
    # The digits model (8x8 inputs) cannot take MNIST's 28x28 images.
    model = write_model("torchscript", tmp_path)
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["run", str(model), "--dataset", "builtin:mnist", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "error: " in result.stderr and "hint: " in result.stderr
    assert not (out / "report.json").exists() and not (out / "model.onnx").exists()
