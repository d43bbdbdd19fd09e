"""PREDICT of randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) over a job's
model.onnx: the classifier the job's certification section certifies, with abstain.

A model hardened with ``randomized_smoothing`` is the base classifier ``f``; what is certified
is the smoothed ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)``. This module predicts as ``g``
does, with the sigma, draw count n and alpha model.onnx's metadata names: ``n`` noisy copies of
the input through ``f``, then the top class if a two-sided binomial test tells it from the
runner-up at alpha, else None (abstain). It needs ``numpy`` and ``onnxruntime`` (``pip install
harden-client[smoothing]``), imported when a SmoothedClassifier is made, so the rest of the
client stays httpx-only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def binomial_two_sided_p(successes: int, trials: int) -> float:
    """The two-sided p-value of ``successes`` of ``trials`` against p = 1/2 (exact, summed in
    log space: the distribution is symmetric, so twice the smaller tail)."""
    if trials == 0:
        return 1.0
    smaller = min(successes, trials - successes)
    log_half = trials * math.log(0.5)
    tail = 0.0
    for k in range(smaller + 1):
        tail += math.exp(
            math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + log_half
        )
    return min(1.0, 2 * tail)


def decide(counts: list[int], alpha: float) -> int | None:
    """PREDICT's decision from class counts: the top class, or None when it cannot be told from
    the runner-up at ``alpha``."""
    order = sorted(range(len(counts)), key=lambda c: counts[c], reverse=True)
    top, runner_up = counts[order[0]], counts[order[1]] if len(order) > 1 else 0
    if binomial_two_sided_p(top, top + runner_up) > alpha:
        return None
    return order[0]


class SmoothedClassifier:
    """``SmoothedClassifier("out/model.onnx").predict(x)`` -> a class index or None (abstain),
    for one raw input ``x`` (C, H, W, in the job's input_range) as the job certified it."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n: int | None = None,
        alpha: float | None = None,
        batch_size: int = 1000,
        seed: int = 0,
    ) -> None:
        import numpy as np
        import onnxruntime

        self._np = np
        self._session = onnxruntime.InferenceSession(
            str(model_path), providers=["CPUExecutionProvider"]
        )
        metadata: dict[str, str] = self._session.get_modelmeta().custom_metadata_map
        if "smoothing_sigma" not in metadata:
            raise ValueError(
                f"{model_path} was not hardened with randomized_smoothing (no smoothing_sigma "
                "in its metadata): it has no smoothed classifier to predict with"
            )
        self.sigma = float(metadata["smoothing_sigma"])
        self.n = n if n is not None else int(metadata["smoothing_n"])
        self.alpha = alpha if alpha is not None else float(metadata["smoothing_alpha"])
        normalization: dict[str, Any] | None = json.loads(metadata.get("normalization", "null"))
        self._mean = self._std = None
        if normalization:
            self._mean = np.asarray(normalization["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
            self._std = np.asarray(normalization["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        self._input = self._session.get_inputs()[0].name
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)

    def counts(self, x: Any) -> list[int]:
        """How often the base classifier predicts each class on ``n`` noisy copies of ``x``."""
        np = self._np
        x = np.asarray(x, dtype=np.float32)
        totals: Any = None
        remaining = self.n
        while remaining > 0:
            size = min(self._batch_size, remaining)
            batch = x[None] + self.sigma * self._rng.standard_normal((size, *x.shape), np.float32)
            if self._mean is not None:
                batch = (batch - self._mean) / self._std  # noise in raw space, as certified
            logits = self._session.run(None, {self._input: batch.astype(np.float32)})[0]
            found = np.bincount(logits.argmax(axis=1), minlength=logits.shape[1])
            totals = found if totals is None else totals + found
            remaining -= size
        return [int(c) for c in totals]

    def predict(self, x: Any) -> int | None:
        """The smoothed classifier's class for ``x``, or None where it abstains."""
        return decide(self.counts(x), self.alpha)
