"""A baseline beside the job's model (core.audit.baseline): attacked exactly as the student on
the same samples, compared sample by sample, cached by its sha256 and the audit settings."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from core.audit.baseline_input import CACHE_ENTRY, Baseline, store_cache_entry
from core.errors import HardenError
from core.pipeline import run
from core.report.schema import Report
from tests.core.model_files import write_model
from tests.core.test_pipeline import _spec

_EVALUATION = {
    "attacks": ["fgsm_ce", "pgd_linf_margin"],
    "samples": 40,
    "samples_slow": 10,
    "epsilons_linf": [0.1, 0.3],
    "pgd_steps": 5,
}


def _run(tmp_path: Path, name: str, baseline: Baseline) -> tuple[Report, dict[str, Path]]:
    model = write_model("torchscript", tmp_path)
    result = run(
        _spec(evaluation=_EVALUATION), model, None, tmp_path / name, device="cpu",
        baseline=baseline,
    )  # fmt: skip
    return result.report, result.artifacts


def test_the_upload_as_its_own_baseline_measures_what_the_audit_measured(tmp_path: Path) -> None:
    # The upload as baseline: attacked on the same samples with the same attacks, its numbers
    # must be the audit's numbers for the upload, and the new model's the student's.
    upload = write_model("torchscript", tmp_path)
    report, artifacts = _run(tmp_path, "first", Baseline(upload, "the upload"))
    comparison = report.comparison_to_baseline
    assert comparison is not None and report.evaluation is not None
    models = report.evaluation.models
    clean, *robust = comparison.rows
    assert clean.kind == "clean" and clean.samples == report.evaluation.samples
    assert clean.baseline_accuracy == pytest.approx(models["uploaded"].clean_accuracy)
    assert clean.new_accuracy == pytest.approx(models["student"].clean_accuracy)
    assert {(r.norm, r.epsilon) for r in robust} == {("linf", 0.1), ("linf", 0.3)}
    uploaded_worst = {(w.norm, w.epsilon): w for w in models["uploaded"].worst_case}
    student_worst = {(w.norm, w.epsilon): w for w in models["student"].worst_case}
    for row in robust:
        assert row.baseline_accuracy == pytest.approx(
            uploaded_worst[(row.norm, row.epsilon)].robust_accuracy
        )
        assert row.new_accuracy == pytest.approx(
            student_worst[(row.norm, row.epsilon)].robust_accuracy
        )
    for row in comparison.rows:
        assert row.difference == pytest.approx(row.new_accuracy - row.baseline_accuracy)
        assert row.difference_low <= row.difference <= row.difference_high
        n = row.samples
        assert row.difference == pytest.approx((row.new_only - row.baseline_only) / n)
    assert not comparison.cached
    # The report on disk carries it, and the verdict summary the gates read too.
    on_disk = Report.model_validate_json(artifacts["report.json"].read_text())
    assert on_disk.comparison_to_baseline == comparison
    summary = on_disk.verdict_summary()
    assert summary is not None and summary.baseline == comparison
    # Under corruptions the baseline took the upload's place on the same corrupted images: the
    # same model, so the same figures as the corruptions section's.
    assert report.corruptions is not None and comparison.corruptions is not None
    assert comparison.corruptions.baseline_accuracy == pytest.approx(
        report.corruptions.mean_corruption_accuracy["uploaded"]
    )
    assert comparison.corruptions.new_accuracy == pytest.approx(
        report.corruptions.mean_corruption_accuracy["student"]
    )
    assert comparison.certified == []  # the job did not certify
    page = artifacts["report.html"].read_text()
    assert "Against the baseline" in page and "the upload (sha256" in page
    assert page.count("robust, linf ε=") == len(robust)
    assert "Under common corruptions (" in page

    # A second job with the same baseline and settings reads the cached outcomes.
    cache = tmp_path / "cache"
    assert store_cache_entry(artifacts[CACHE_ENTRY], cache) is not None
    again, again_artifacts = _run(tmp_path, "second", Baseline(upload, "the upload", cache))
    assert again.comparison_to_baseline is not None and again.comparison_to_baseline.cached
    assert CACHE_ENTRY not in again_artifacts
    assert again.comparison_to_baseline.rows == comparison.rows


def test_a_certifying_job_certifies_its_baseline_alike(tmp_path: Path) -> None:
    # The upload as baseline again: certified on the same images with the same noise, its
    # certified accuracy per radius is the job's certificate of the upload.
    model = write_model("torchscript", tmp_path)
    spec = _spec(
        evaluation=_EVALUATION | {"samples": 10, "samples_slow": 5},
        certification={"enabled": True, "n0": 10, "n": 100, "samples": 6, "radii": [0.1, 0.25]},
        corruptions={"enabled": False},
    )
    report = run(
        spec, model, None, tmp_path / "out", device="cpu", baseline=Baseline(model, "upload")
    ).report
    comparison, certification = report.comparison_to_baseline, report.certification
    assert comparison is not None and certification is not None
    assert comparison.corruptions is None  # the job measured none
    uploaded = certification.models["uploaded"].certified
    student = certification.models["student"].certified
    assert [row.radius for row in comparison.certified] == [0.1, 0.25]
    for row, up, st in zip(comparison.certified, uploaded, student, strict=True):
        assert row.images == 6
        assert row.baseline_certified_accuracy == up.certified_accuracy
        assert row.new_certified_accuracy == st.certified_accuracy
        assert row.difference == pytest.approx(st.certified_accuracy - up.certified_accuracy)


def test_a_hostile_baseline_goes_through_the_intake_and_is_refused(tmp_path: Path) -> None:
    hostile = tmp_path / "champion.pt"
    hostile.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(HardenError):
        _run(tmp_path, "out", Baseline(hostile, "a pickle"))
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_cache_entry_that_is_no_entry_is_not_stored(tmp_path: Path) -> None:
    entry = tmp_path / CACHE_ENTRY
    entry.write_text('{"key": "../../etc/passwd", "outcomes": {"clean": [true]}}')
    assert store_cache_entry(entry, tmp_path / "cache") is None
    entry.write_text("not json")
    assert store_cache_entry(entry, tmp_path / "cache") is None
