"""Reading a report.json of the previous major version (1.9, written by the service as it was
before the 2.0 layout, tests/core/report/data/report-v1.9.json: distillation and adversarial
training on builtin:digits) as a 2.0 report, with its numbers unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.contract.spec import FLAT_DISTILLATION_FIELDS, HardenSpec
from core.report.schema import REPORT_VERSION, read_report

V1 = Path(__file__).parent / "data" / "report-v1.9.json"


def _v1() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(V1.read_text())
    assert data["report_version"] == "1.9"
    return data


def test_a_1x_report_is_read_as_the_current_version_with_its_numbers() -> None:
    old = _v1()
    report = read_report(copy.deepcopy(old))
    assert report.report_version == REPORT_VERSION and REPORT_VERSION.startswith("2.")
    # The distillation settings that 1.x kept at the top of the spec are in their section.
    assert not set(FLAT_DISTILLATION_FIELDS) & set(report.spec)
    nested = report.spec["distillation"]
    assert {name: nested[name] for name in FLAT_DISTILLATION_FIELDS} == {
        name: old["spec"][name] for name in FLAT_DISTILLATION_FIELDS
    }
    # ... and the upgraded spec is one the service accepts again (to rerun the job).
    assert (
        HardenSpec.model_validate(report.spec).distillation.temperature
        == (old["spec"]["temperature"])
    )
    # Every number is the one the old report had.
    assert report.models["student"].clean_accuracy == old["models"]["student"]["clean_accuracy"]
    assert report.verdict is not None and report.verdict.label == old["verdict"]["label"]
    assert report.timings_s == old["timings_s"]  # distillation's stages kept their names
    [row] = report.comparison
    assert row.robust_training is not None and row.distillation is None
    assert row.robust_training.epochs == old["comparison"][0]["robust_training"]["epochs"]


def test_a_1x_single_stage_method_times_its_stage_as_training() -> None:
    old = _v1()
    old["method"] = "adversarial"
    old["timings_s"] = {"load": 1.0, "student": 2.0, "export": 0.5}
    report = read_report(old)
    assert report.timings_s == {"load": 1.0, "training": 2.0, "export": 0.5}


def test_a_report_of_the_current_version_reads_back_unchanged() -> None:
    report = read_report(_v1())
    again = read_report(json.loads(report.model_dump_json()))
    assert again == report


@pytest.mark.parametrize("version", ["3.0", "0.9", ""])
def test_a_version_it_cannot_read_is_refused_with_what_to_do(version: str) -> None:
    data = _v1()
    data["report_version"] = version
    with pytest.raises(ValueError, match="upgrade harden"):
        read_report(data)
