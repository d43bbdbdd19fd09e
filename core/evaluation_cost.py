"""The worst-case size of a job's robustness evaluation, counted in attack steps (torch-free).

One attack step is one forward and backward pass of one model on one sample (one query for the
gradient-free Square attack). The count is an upper bound from the spec alone, before the data
or the model are known: every attack is charged its full iteration budget at every one of its
budgets, on ``max(samples, samples_slow)`` samples ('auto': the CPU's counts), for the uploaded
model and for each hardened one. Wall-clock time also scales with the model and the input size;
the bound keeps a single request from asking for days of attacks (e.g. ``samples=10000,
pgd_steps=1000`` and 16 budgets: 160 million steps per PGD attack). The service refuses a spec
past its limit at submit (``HARDEN_MAX_EVALUATION_STEPS``); a local ``harden run`` is the user's
own time and has none.
"""

from __future__ import annotations

import math
from typing import Any

# JSMA changes two input features per iteration and computes the Jacobian of every class per
from core.evaluation_spec import EvaluationSpec
from core.spec import HardenSpec

# JSMA changes two input features per iteration and computes the Jacobian of every class per
# iteration. Neither the input size nor the classes are known at submit: charged as a 3x32x32
# input (the largest zoo input) with 10 classes.
JSMA_REFERENCE_FEATURES = 3 * 32 * 32
JSMA_REFERENCE_CLASSES = 10


def _steps_per_sample(name: str, evaluation: EvaluationSpec) -> int:
    """The attack steps of attack ``name`` on one sample, over all of its budgets."""
    steps = evaluation.pgd_steps
    # Before the data is known an unset threat model reads as mnist's, the preset with the most
    # budgets (core.threat_models): the bound stays an upper bound.
    linf = len(evaluation.budgets("linf", (0.0, 1.0)))
    l2 = len(evaluation.budgets("l2", (0.0, 1.0)))
    jsma_iterations = math.ceil(evaluation.jsma_max_fraction * JSMA_REFERENCE_FEATURES / 2)
    known = {
        "fgsm_ce": linf,
        "fgsm_margin": linf,
        "pgd_linf_ce": linf * steps,
        "pgd_linf_margin": linf * steps,
        "pgd_l2_ce": l2 * steps,
        "pgd_l2_margin": l2 * steps,
        "jsma_softmax": jsma_iterations * JSMA_REFERENCE_CLASSES,
        "jsma_logits": jsma_iterations * JSMA_REFERENCE_CLASSES,
        "cw_l2": evaluation.cw_binary_steps * evaluation.cw_iterations,
        "apgd_ce": linf * steps,
        "apgd_dlr": linf * steps,
        "square": linf * evaluation.square_queries,
        "transfer": linf + l2,
    }
    if name in known:
        return known[name]
    # An attack added after this table: charged as a targeted iterative attack at every budget
    # of both norms (the most any attack of the registry costs per iteration).
    targets: Any = getattr(evaluation, "target_classes", 1)
    return (linf + l2) * steps * max(1, int(targets))


def evaluation_steps(spec: HardenSpec) -> dict[str, int]:
    """Attack name -> its worst-case attack steps over the whole job (empty when the evaluation
    is off). The job's total is the sum."""
    evaluation = spec.evaluation
    if not evaluation.enabled:
        return {}
    # 'auto' is charged at the CPU's counts: a GPU worker attacks more samples because it is
    # faster, in about the time the CPU's take (the bound is there to bound a job's time).
    samples = max(evaluation.sample_counts("cpu"))
    # The upload and every hardened model are attacked alike.
    models = 1 + len(spec.methods)
    return {
        name: models * samples * _steps_per_sample(name, evaluation) for name in evaluation.attacks
    }
