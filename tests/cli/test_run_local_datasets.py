"""``harden run`` on datasets where users keep them: a folder of class folders is split by
--test-fraction and the report records the split; a dataset it cannot read is one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from cli.main import app
from core.contract.library_names import EXPORT_HINT, dataset_name_refusal
from core.report.schema import Report
from tests.core.model_files import write_model

runner = CliRunner()


def _digits_folder(root: Path, per_class: int) -> Path:
    digits = load_digits()
    for label in range(10):
        images = digits.images[digits.target == label][:per_class]
        for index, image in enumerate(images):
            path = root / f"digit-{label}" / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(path)
    return root


def test_a_folder_of_class_folders_runs_and_the_report_records_the_split(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    folder = _digits_folder(tmp_path / "digits", per_class=8)
    out = tmp_path / "out"
    args = ["run", str(model), "--dataset-file", str(folder), "--out", str(out),
            "--no-evaluation", "--teacher-epochs", "0", "--student-epochs", "1",
            "--test-fraction", "0.25", "--seed", "7", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((out / "report.json").read_text())
    split = report.dataset_split
    assert split is not None and split.source == "test_fraction" and split.split_by_test_fraction
    assert (split.train_samples, split.test_samples) == (60, 20)
    assert (split.test_fraction, split.seed) == (0.25, 7)
    assert report.input["dataset"]["class_names"][0] == "digit-0"


def test_a_missing_dataset_is_one_error_line_with_the_forms(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    result = runner.invoke(
        app, ["run", str(model), "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0]
    assert "<class>/<image>" in result.stderr and "x and y" in result.stderr


def test_a_library_name_is_one_error_line_with_the_services_hint(tmp_path: Path) -> None:
    model = write_model("torchscript", tmp_path)
    args = ["run", str(model), "--dataset", "torchvision:MNIST", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "do not download datasets by library name" in errors[0]
    assert "does not exist" not in result.stderr
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    refusal = dataset_name_refusal("torchvision:MNIST")
    assert refusal is not None and hints == [f"hint: {refusal.hint}"]  # the API's 422 hint
    assert hints[0].endswith(EXPORT_HINT) and "harden datasets upload mnist.npz" in hints[0]
