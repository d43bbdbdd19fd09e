"""End to end through core.pipeline.run, one upload per loadable format, on builtin:digits."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from core.contract.methods import DEFAULT_METHOD, job_stages
from core.contract.spec import HardenSpec
from core.errors import InvalidSpecError, JobCancelledError
from core.intake.zoo import build_zoo_model
from core.pipeline import run
from core.report.schema import Report
from tests.core.model_files import FORMATS, digits, write_model


def _spec(fmt: str = "torchscript", **overrides: object) -> HardenSpec:
    values: dict[str, object] = {
        "dataset": "builtin:digits",
        "temperature": 50.0,
        "teacher_epochs": 1,
        "student_epochs": 5,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "evaluation": {"enabled": False},
    }
    if fmt == "safetensors":
        values["architecture"] = "mlp"  # weights only: the upload names its zoo architecture
    values.update(overrides)
    return HardenSpec.model_validate(values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_hardened_end_to_end(fmt: str, tmp_path: Path) -> None:
    model_file = write_model(fmt, tmp_path)
    out = tmp_path / "out"
    result = run(_spec(fmt), model_file, None, out, device="cpu")

    # report.json on disk validates and matches the returned report.
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report == result.report
    assert report.input["model"]["format"] == fmt
    models = report.models
    assert set(models) == {"uploaded", "teacher", "student"}
    assert models["uploaded"].clean_accuracy > 0.85
    assert models["student"].clean_accuracy > 0.6  # trained: chance is 0.1
    assert models["student"].mean_abs_logit > 5 * models["uploaded"].mean_abs_logit
    # The upload's own last layer was scaled, not a wrapper, on every format.
    assert not report.distillation.teacher_start.startswith("output multiplied")
    assert len(report.distillation.student_loss_history) == 5
    # An explicit student_epochs is run as given (no auto resolution).
    assert report.spec["distillation"]["student_epochs"] == report.distillation.student_epochs == 5
    assert not report.distillation.student_epochs_auto
    assert report.distillation.student_stop == "epochs as set"
    # Trained on every digit, or, a scratch student the check kept, on all but those it held out.
    check = report.distillation.student_check
    assert check is not None and check.held_out_samples == 143
    trained_on = len(digits().y_train) - (0 if check.fell_back else check.held_out_samples)
    assert report.distillation.student_steps == 5 * math.ceil(trained_on / 32)
    # Relative to the logits: the student's are T times an undistilled model's (hundreds), so
    # float32 rounding alone gives absolute differences of 1e-4 and more.
    assert report.export.max_rel_diff <= 1e-5 and report.export.prediction_agreement == 1.0
    # Evaluation is off: every stage that ran is timed, and no "evaluate" stage is claimed
    # (common corruptions have their own switch, on by default).
    assert set(report.timings_s) == {
        "load",
        "teacher",
        "soft_labels",
        "student",
        "export",
        "corruptions",
        "report",
    }
    # report.html is rendered from the final report: every stage, its own included, is there.
    page = result.artifacts["report.html"].read_text(encoding="utf-8")
    for stage in report.timings_s:
        assert f'<tr><td class="name">{stage}</td><td>' in page, stage

    # The ONNX file: dynamic batch, metadata, and the same logits as the report's student.
    onnx_path = result.artifacts["model.onnx"]
    proto = onnx.load(str(onnx_path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    meta = {p.key: p.value for p in proto.metadata_props}
    assert float(meta["temperature"]) == 50.0
    # Distillation's outputs are T-scaled logits, and the file says so (and how to read them);
    # the report says the same in the same sentence. Not audited here: no verdict to record.
    assert meta["outputs"] == "t_scaled_logits" and meta["outputs_note"] == report.export.outputs
    assert (
        "softmax(logits / 50)" in report.export.outputs and report.export.output_temperature == 50
    )
    assert (meta["method"], meta["verdict"]) == ("distillation", "not audited")
    assert report.export.sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert json.loads(meta["classes"]) == digits().class_names
    assert meta["uploaded_model_sha256"] == report.input["model"]["sha256"]
    assert {"input_shape", "input_range", "normalization", "dataset", "seed", "software"} <= set(
        meta
    )
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": digits().x_test.numpy()})
    accuracy = float(np.mean(logits.argmax(1) == digits().y_test.numpy()))
    assert abs(accuracy - models["student"].clean_accuracy) < 1e-6
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging files left


def test_cancellation_leaves_no_artifacts(tmp_path: Path) -> None:
    model_file = write_model("torchscript", tmp_path)
    out = tmp_path / "out"
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 20

    with pytest.raises(JobCancelledError):
        run(_spec(), model_file, None, out, should_cancel=should_cancel, device="cpu")
    assert list(out.iterdir()) == []


def test_cancellation_after_export_still_leaves_nothing(tmp_path: Path) -> None:
    model_file = write_model("torchscript", tmp_path)
    out = tmp_path / "out"
    stages: list[str] = []

    def should_cancel() -> bool:
        return bool(stages) and stages[-1] == "export"

    with pytest.raises(JobCancelledError):
        run(
            _spec(student_epochs=1),
            model_file,
            None,
            out,
            on_progress=lambda stage, done, total: stages.append(stage),
            should_cancel=should_cancel,
            device="cpu",
        )
    assert "export" in stages
    assert list(out.iterdir()) == []


def test_progress_is_monotone_per_stage_in_pipeline_order(tmp_path: Path) -> None:
    events: list[tuple[str, int, int]] = []
    run(
        _spec(student_epochs=1),
        write_model("torchscript", tmp_path),
        None,
        tmp_path / "out",
        on_progress=lambda stage, done, total: events.append((stage, done, total)),
        device="cpu",
    )
    order = list(dict.fromkeys(stage for stage, _, _ in events))
    assert order == [s.name for s in job_stages(DEFAULT_METHOD) if s.name in order]
    assert {"load", "teacher", "soft_labels", "student", "export", "report"} <= set(order)
    for stage in order:
        done = [d for s, d, _ in events if s == stage]
        assert done == sorted(done)
        assert done[-1] == [t for s, _, t in events if s == stage][-1]


def test_a_dataset_file_and_a_named_dataset_conflict(tmp_path: Path) -> None:
    data = digits()
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=data.x_train.numpy(), y_train=data.y_train.numpy(),
             x_test=data.x_test.numpy(), y_test=data.y_test.numpy())  # fmt: skip
    with pytest.raises(InvalidSpecError, match="dataset"):
        run(_spec(), write_model("torchscript", tmp_path), npz, tmp_path / "out", device="cpu")


def test_evaluation_disabled_leaves_the_sections_empty(tmp_path: Path) -> None:
    # Also checks the upload was not mutated by the teacher's scaling: uploaded logits stay T=1.
    result = run(_spec(student_epochs=1), write_model("onnx", tmp_path), None, tmp_path / "o")
    assert result.report.evaluation is None and result.report.verdict is None
    assert result.report.models["uploaded"].mean_abs_logit < 50


def test_an_upload_at_chance_is_warned_about_at_load_and_in_the_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A linear model whose weights are all zero predicts class 0 for every digit: 10% accuracy.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(model[1].weight)
    torch.nn.init.zeros_(model[1].bias)
    path = tmp_path / "untrained.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    evaluation = {"attacks": ["fgsm_ce"], "epsilons_linf": [0.1], "epsilons_l2": [],
                  "samples": 20, "samples_slow": 10}  # fmt: skip
    spec = _spec(teacher_epochs=0, student_epochs=1, evaluation=evaluation)
    with caplog.at_level("WARNING", logger="core.pipeline"):
        report = run(spec, path, None, tmp_path / "out", device="cpu").report
    [note] = [n for n in report.notes if "near chance" in n]
    assert "of 10 classes" in note and "--fail-on untrained" in note
    assert any("near chance" in r.getMessage() for r in caplog.records)  # logged at load
    assert report.verdict is not None
    assert report.verdict.headline.startswith("The upload is at or near chance accuracy")
    summary = report.verdict_summary()
    assert summary is not None and summary.untrained_upload
    # A trained upload gets neither.
    trained = run(_spec(), write_model("torchscript", tmp_path), None, tmp_path / "t").report
    assert not [n for n in trained.notes if "near chance" in n] and not trained.untrained_upload


def test_layout_and_dtype_conversions_of_the_dataset_are_in_the_report(tmp_path: Path) -> None:
    # The digits stored as a user might: uint8, channels-last. Loaded as before, and said so.
    data = digits()

    def stored(x: torch.Tensor) -> np.ndarray:
        return (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)

    path = tmp_path / "digits.npz"
    np.savez(path, x_train=stored(data.x_train), y_train=data.y_train.numpy(),
             x_test=stored(data.x_test), y_test=data.y_test.numpy())  # fmt: skip
    spec = _spec(dataset=str(path), student_epochs=1)
    report = run(spec, write_model("torchscript", tmp_path), None, tmp_path / "out").report
    conversions = report.input["dataset"]["conversions"]
    assert len(conversions) == 2 and "channels-last" in conversions[0]
    assert "uint8" in conversions[1]
    assert [f"dataset: {c}" for c in conversions] == [n for n in report.notes if "dataset: " in n]


def test_an_undertrained_student_is_named_in_the_notes(tmp_path: Path) -> None:
    # One student epoch at T=100 leaves the student far below the upload: the report says so and
    # says what to change, instead of handing back a worse model silently.
    model_file = write_model("torchscript", tmp_path)
    # (student_max_drop null: without the scratch student's check, which would replace it.)
    spec = _spec(temperature=100.0, student_epochs=1, learning_rate=1e-4, student_max_drop=None)
    report = run(spec, model_file, None, tmp_path / "out", device="cpu").report
    drop = report.models["uploaded"].clean_accuracy - report.models["student"].clean_accuracy
    assert drop > 0.015
    [note] = [n for n in report.notes if "student's clean accuracy" in n]
    assert f"{100 * drop:.1f} points" in note and "student_epochs" in note
    assert report.distillation.student_check is None
    assert report.distillation.student_init == "scratch"


def test_a_scratch_student_that_fails_its_check_is_replaced_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    # The same undertrained scratch student, with the check on (the default): its accuracy on the
    # training images held out from it is far below the upload's, so the job deploys a student
    # warm-started from the teacher, which keeps the upload's accuracy and the T-times logits.
    model_file = write_model("torchscript", tmp_path)
    spec = _spec(temperature=100.0, student_epochs=1, learning_rate=1e-4)
    result = run(spec, model_file, None, tmp_path / "out", device="cpu")
    report = Report.model_validate_json(result.artifacts["report.json"].read_text())
    uploaded, student = report.models["uploaded"], report.models["student"]
    check = report.distillation.student_check
    assert check is not None and check.fell_back
    assert check.held_out_samples == 143  # a tenth of the 1,437 digits
    assert check.upload_test_accuracy == pytest.approx(uploaded.clean_accuracy)
    assert check.scratch_accuracy < check.upload_test_accuracy - check.max_drop
    assert report.distillation.student_init == "teacher"
    assert student.clean_accuracy >= uploaded.clean_accuracy - DEFAULT_SPEC_TOLERANCE
    assert student.mean_abs_logit > 10 * uploaded.mean_abs_logit
    [note] = [n for n in report.notes if "student trained from scratch" in n]
    assert f"{100 * check.scratch_accuracy:.1f}% on 143 training images" in note
    assert "warm-started from the teacher" in note
    assert not [n for n in report.notes if "student's clean accuracy" in n]
    html = result.artifacts["report.html"].read_text()
    assert "scratch student check" in html and "warm-started from the teacher" in html


def test_an_auto_student_stops_when_its_loss_converges_and_says_so(tmp_path: Path) -> None:
    # The spec's defaults on builtin:digits (1,437 images, 12 steps per epoch at batch 128; 143
    # of them held out to check a scratch student): the student trains until its soft-label loss
    # stops improving, well inside the step bound, and report.json records the epochs, steps,
    # the reason and the final divergence.
    spec = HardenSpec(dataset="builtin:digits", evaluation={"enabled": False})
    result = run(spec, write_model("torchscript", tmp_path), None, tmp_path / "out", device="cpu")
    report = Report.model_validate_json(result.artifacts["report.json"].read_text())
    distillation = report.distillation
    assert report.spec["distillation"]["student_epochs"] is None  # a rerun stops alike
    assert distillation.student_epochs_auto and distillation.student_stop == "converged"
    assert 6 <= distillation.student_epochs < 20_000 // 12  # at least 1 + the 5-epoch finish
    check = distillation.student_check
    assert check is not None
    if check.fell_back:  # a student warm-started from the teacher, on every digit
        assert distillation.student_steps == distillation.student_epochs * 12
    else:  # to its plateau on 1,294 digits, then the 5-epoch finish on all 1,437
        assert distillation.student_epochs == check.scratch_epochs + 5
        assert distillation.student_steps == check.scratch_epochs * 11 + 5 * 12
    assert len(distillation.student_loss_history) == distillation.student_epochs
    assert distillation.student_final_divergence is not None
    assert 0 <= distillation.student_final_divergence < distillation.student_loss_history[0]
    assert distillation.student_parametrization == "output_scale"
    assert distillation.student_deployed.startswith("T folded into")


def _papernot_upload(directory: Path) -> Path:
    """Papernot's CNN trained at T=1 on digits (Adam lr 1e-3, batch 128, 30 epochs: 97.8%)."""
    data = digits()
    torch.manual_seed(0)
    model = build_zoo_model("papernot_mnist", num_classes=10, input_shape=data.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        for index in torch.randperm(len(data.x_train), generator=generator).split(128):
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    path = directory / "papernot.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


# The bar a default job must clear on every architecture (bench/results/student_accuracy.md).
DEFAULT_SPEC_TOLERANCE = 0.015


@pytest.mark.slow
def test_a_default_spec_digits_student_comes_close_to_the_upload(tmp_path: Path) -> None:
    spec = HardenSpec(dataset="builtin:digits", evaluation={"enabled": False})
    report = run(spec, _papernot_upload(tmp_path), None, tmp_path / "out", device="cpu").report
    uploaded = report.models["uploaded"].clean_accuracy
    assert uploaded > 0.96
    assert report.distillation.student_stop == "converged"
    assert report.models["student"].clean_accuracy >= uploaded - DEFAULT_SPEC_TOLERANCE
    assert not [n for n in report.notes if "student's clean accuracy" in n]
