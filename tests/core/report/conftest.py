"""A real audited run shared by the tests of the documents derived from the report (SARIF, the
model card): a TorchScript MLP on builtin:digits, distilled as tests/core/test_pipeline.py does
and attacked by a few fast attacks, through core.pipeline.run, once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.report.schema import Report


@pytest.fixture(scope="session")
def audited_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Report, Path]]:
    from core.pipeline import run
    from tests.core.model_files import write_model
    from tests.core.test_pipeline import _spec

    folder = tmp_path_factory.mktemp("audited")
    spec = _spec(
        evaluation={
            "attacks": ["fgsm_ce", "pgd_linf_margin", "pgd_l2_margin", "apgd_dlr", "cw_l2"],
            "samples": 40,
            "samples_slow": 10,
            "epsilons_linf": [0.1, 0.3],
            "epsilons_l2": [1.0],
            "pgd_steps": 5,
            "cw_iterations": 10,
            "cw_binary_steps": 2,
        }
    )
    result = run(spec, write_model("torchscript", folder), None, folder / "out", device="cpu")
    yield result.report, folder / "out"
