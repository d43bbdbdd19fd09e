"""The verdict on a certificate (core/audit/verdict.py, with_certificate): a certified L2 gain of
the smoothed classifier beyond sampling noise is a ``real gain`` that names the smoothed
classifier, never the base network; a gain within noise changes nothing but the evidence."""

from __future__ import annotations

from core.audit.schema import Verdict
from core.audit.verdict import with_certificate
from core.contract.certification import Certification, CertifiedAt, ModelCertification

RADII = [0.25, 0.5, 0.75, 1.0]


def _model(certified: list[float]) -> ModelCertification:
    return ModelCertification(
        certified=[
            CertifiedAt(radius=r, certified_accuracy=c)
            for r, c in zip(RADII, certified, strict=True)
        ],
        smoothed_accuracy=certified[0],
        abstain_rate=0.0,
        mean_radius=0.5,
        radii=[],
        seconds_per_image=0.1,
    )


def _certification(uploaded: list[float], student: list[float], samples: int) -> Certification:
    return Certification(
        sigma=0.25, n0=100, n=1000, alpha=0.001, samples=samples, seed=0,
        what="the smoothed classifier",
        models={"uploaded": _model(uploaded), "student": _model(student)},
    )  # fmt: skip


MASKED = Verdict(
    label="masked", headline="Masked: CW-L2 still wins.", evidence=["e"], paper_attacks_gain=True
)


def test_a_certified_gain_beyond_noise_is_real_for_the_smoothed_classifier_only() -> None:
    decided = with_certificate(
        MASKED, _certification([0.6, 0.3, 0.1, 0.0], [0.9, 0.8, 0.6, 0.4], samples=100)
    )
    assert decided.label == "real gain"
    headline = decided.headline
    assert "smoothed classifier" in headline and "not for the base network" in headline
    # The attacks' verdict on the base network is kept beside the certificate.
    assert "Masked: CW-L2 still wins." in headline
    # The largest radius with a real gain is the one named (1.0: 40 points on 100 images).
    assert "radius 1 " in headline


def test_a_gain_within_sampling_noise_changes_only_the_evidence() -> None:
    # 10 points on 20 images is inside 1.96 standard errors (about 29 points).
    decided = with_certificate(
        MASKED, _certification([0.5, 0.4, 0.2, 0.1], [0.6, 0.5, 0.3, 0.2], samples=20)
    )
    assert decided.label == "masked" and decided.headline == MASKED.headline
    assert len(decided.evidence) == len(MASKED.evidence) + 1
