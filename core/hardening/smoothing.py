"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): the base classifier is trained
under Gaussian noise, ``min_θ E_δ CE(f(x + δ), y)`` with ``δ ~ N(0, σ² I)``, one noise draw per
input per step as in the paper, so that the smoothed classifier
``g(x) = argmax_c P(f(x + δ) = c)`` is accurate. Its robustness is not claimed by this training:
the audit's certification section proves it, for ``g``, with CERTIFY (core.audit.certify).

The noise is added in raw input space (in front of the spec's normalisation), where the audit
certifies. Noise is not clipped to the input range: the certificate is for the Gaussian
perturbation as the paper defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.contract.methods import RANDOMIZED_SMOOTHING
from core.contract.smoothing import SmoothingRecord, SmoothingSpec
from core.hardening.method import ACCURACY_DROP_NOTE, HardeningResult
from core.hardening.normalization import with_normalization
from core.hardening.training import train_epochs
from core.modules import logits_of
from core.names import CancelFn, ProgressFn
from core.stages import timed_stage

if TYPE_CHECKING:
    from core.datasets.dataset import Dataset
    from core.intake.upload import LoadedModel
    from core.plan import RunPlan


class RandomizedSmoothing:
    """Training under noise of the upload (or a re-initialised copy); stage ``training``."""

    info = RANDOMIZED_SMOOTHING
    name = RANDOMIZED_SMOOTHING.name
    title = RANDOMIZED_SMOOTHING.title

    def _settings(self, plan: RunPlan) -> SmoothingSpec:
        settings = self.info.settings_of(plan.spec)
        assert isinstance(settings, SmoothingSpec)
        return settings

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        spec = plan.spec
        settings = self._settings(plan)
        sigma = settings.resolved_sigma(spec.input_range)
        device = torch.device(plan.device)
        torch.manual_seed(spec.seed)  # the noise draws and a scratch start
        generator = torch.Generator().manual_seed(spec.seed)  # the batches
        timings: dict[str, float] = {}
        inputs, labels = data.x_train.to(device), data.y_train.to(device)

        def under_noise(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
            return F.cross_entropy(model(x + sigma * torch.randn_like(x)), target)

        with timed_stage("training", should_cancel, timings):
            model = uploaded.fresh_copy(reinitialise=settings.start == "scratch").to(device)
            raw = with_normalization(model, spec.normalization)
            losses = train_epochs(
                raw, inputs, labels, batch_loss=under_noise, epochs=settings.epochs, plan=plan,
                stage="training", generator=generator, on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip
            noisy = inputs + sigma * torch.randn_like(inputs)
            accuracy = float((logits_of(raw, noisy).argmax(1) == labels).float().mean())
        record = SmoothingRecord(
            sigma=sigma, epochs=len(losses), start=settings.start, loss_history=losses,
            noisy_train_accuracy=accuracy,
        )  # fmt: skip
        return HardeningResult(
            teacher=None, student=model, timings=timings, losses={"training": losses},
            noise_sigma=sigma, record=record,
        )  # fmt: skip

    def report_section(self, result: HardeningResult, plan: RunPlan) -> dict[str, Any]:
        return {"smoothing": result.record}

    def notes(self, result: HardeningResult, plan: RunPlan, *, accuracy_drop: float) -> list[str]:
        record: SmoothingRecord = result.record
        notes = [
            "model.onnx is the base classifier f; what the certification section certifies is "
            f"the smoothed classifier g(x) = argmax P(f(x + N(0, {record.sigma:g}^2)) = c), "
            "which harden_client's SmoothedClassifier predicts (with abstain)"
        ]
        if accuracy_drop > ACCURACY_DROP_NOTE:
            notes.append(
                f"the base classifier's clean accuracy is {100 * accuracy_drop:.1f} points below "
                f"the uploaded model's: trained under noise of sigma {record.sigma:g}, it is "
                "meant to be accurate under noise, not on clean inputs; a smaller smoothing.sigma "
                "costs less clean accuracy and certifies smaller radii"
            )
        return notes
