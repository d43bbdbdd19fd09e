"""Randomized smoothing as a method, end to end through the pipeline on builtin:digits: its
training under noise, its record, the certification section of both models and what model.onnx
says; and the smoothed classifier that harden_client predicts with, against the audit's."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from core.contract.spec import HardenSpec
from core.pipeline import run
from core.report.schema import Report
from tests.core.model_files import digits, write_model


@pytest.fixture(scope="module")
def smoothed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    tmp = tmp_path_factory.mktemp("smoothing")
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:digits",
            "method": "randomized_smoothing",
            # digits' pixels are in [0, 1]: sigma 0.25 is the default noise
            "smoothing": {"epochs": 4},
            "batch_size": 64,
            "learning_rate": 3e-3,
            "evaluation": {"enabled": False},
            "certification": {"n": 300, "n0": 30, "samples": 12, "radii": [0.1, 0.25, 0.5]},
        }
    )
    out = tmp / "out"
    result = run(spec, write_model("torchscript", tmp), None, out, device="cpu")
    return result.report, out


def test_the_method_trains_under_noise_and_records_it(smoothed: tuple[Report, Path]) -> None:
    report, _ = smoothed
    record = report.smoothing  # type: ignore[attr-defined]  # the catalogue's record section
    assert report.method == "randomized_smoothing" and record.sigma == 0.25
    assert record.epochs == 4 and len(record.loss_history) == 4
    assert record.noisy_train_accuracy > 0.5  # chance is 0.1
    assert "training" in report.timings_s and "certify" in report.timings_s
    assert any("smoothed classifier" in note for note in report.notes)


def test_both_models_are_certified_on_the_same_images(smoothed: tuple[Report, Path]) -> None:
    report, out = smoothed
    section = report.certification
    assert section is not None and section.sigma == 0.25 and section.n == 300
    assert set(section.models) == {"uploaded", "student"}
    for certified in section.models.values():
        assert len(certified.radii) == section.samples == 12
        accuracies = [c.certified_accuracy for c in certified.certified]
        assert accuracies == sorted(accuracies, reverse=True)  # fewer at larger radii
        assert certified.smoothed_accuracy >= accuracies[0]
    # Trained under the noise it is certified at, the hardened model's smoothed classifier is
    # right and certified on more of the images than the upload's (trained without noise).
    student, uploaded = section.models["student"], section.models["uploaded"]
    assert student.mean_radius * student.smoothed_accuracy >= (
        uploaded.mean_radius * uploaded.smoothed_accuracy
    )
    assert "nothing is certified of the base network" in section.what
    html = (out / "report.html").read_text()
    assert "certified accuracy" in html and "Randomized smoothing" in html
    # The plot of certified accuracy against radius, beside the empirical L2 accuracy.
    assert 'alt="certified accuracy against L2 radius' in html
    assert 'src="data:image/png;base64,' in html.split('alt="certified accuracy against L2')[1]


def test_model_onnx_says_how_to_predict_as_the_certified_classifier(
    smoothed: tuple[Report, Path],
) -> None:
    _, out = smoothed
    metadata = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert float(metadata["smoothing_sigma"]) == 0.25
    assert int(metadata["smoothing_n"]) == 300 and float(metadata["smoothing_alpha"]) == 0.001
    assert metadata["outputs"] == "logits"


def test_the_clients_smoothed_classifier_predicts_as_the_certificate_says(
    smoothed: tuple[Report, Path],
) -> None:
    """harden_client.smoothed predicts with model.onnx as the certified g: on the images the
    audit certified right with a radius, PREDICT (its own noise, n from the metadata) answers
    the same class or abstains, and is never wrong more often than alpha allows."""
    from harden_client.smoothed import SmoothedClassifier

    report, out = smoothed
    section = report.certification
    assert section is not None
    data = digits()
    classifier = SmoothedClassifier(out / "model.onnx", seed=5)
    assert classifier.sigma == section.sigma and classifier.n == section.n
    certified = [i for i, r in enumerate(section.models["student"].radii) if r > 0]
    assert certified, "the hardened model certified none of the images"
    answers = [classifier.predict(data.x_test[i].numpy()) for i in certified]
    wrong = [
        i
        for i, a in zip(certified, answers, strict=True)
        if a is not None and a != int(data.y_test[i])
    ]
    assert not wrong
    assert sum(a is not None for a in answers) >= len(certified) // 2


def test_the_clients_binomial_test_matches_scipy_and_abstains_on_ties() -> None:
    from harden_client.smoothed import binomial_two_sided_p, decide
    from scipy.stats import binomtest

    for successes, trials in ((5, 10), (0, 7), (60, 100), (530, 1000), (999, 1000)):
        assert binomial_two_sided_p(successes, trials) == pytest.approx(
            binomtest(successes, trials, 0.5).pvalue, rel=1e-9
        )
    assert decide([500, 500, 0], alpha=0.001) is None
    assert decide([3, 40, 957], alpha=0.001) == 2
