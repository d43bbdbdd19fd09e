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

However the audit is split into shards (EvaluationSpec.shard_samples: core.audit.shards), every
sample is attacked once by every attack, so neither the bound nor an audit's plan depends on it.
"""

from __future__ import annotations

import math

from core.contract.attacks import CATALOGUE, CostInputs
from core.contract.evaluation import EvaluationSpec
from core.contract.spec import HardenSpec

# JSMA changes two input features per iteration and computes the Jacobian of every class per
# iteration. Neither the input size nor the classes are known at submit: charged as a 3x32x32
# input (the largest zoo input) with 10 classes.
JSMA_REFERENCE_FEATURES = 3 * 32 * 32
JSMA_REFERENCE_CLASSES = 10


def _cost_inputs(evaluation: EvaluationSpec) -> CostInputs:
    # Before the data is known an unset threat model reads as mnist's, the preset with the most
    # budgets (core.contract.threat_models): the bound stays an upper bound.
    return CostInputs(
        budgets={norm: len(evaluation.budgets(norm, (0.0, 1.0))) for norm in ("linf", "l2")},
        pgd_steps=evaluation.pgd_steps,
        target_classes=evaluation.target_classes,
        jsma_iterations=math.ceil(evaluation.jsma_max_fraction * JSMA_REFERENCE_FEATURES / 2),
        jsma_classes=JSMA_REFERENCE_CLASSES,
        cw_binary_steps=evaluation.cw_binary_steps,
        cw_iterations=evaluation.cw_iterations,
        square_queries=evaluation.square_queries,
    )


def evaluation_steps(spec: HardenSpec) -> dict[str, int]:
    """Attack name (and 'certify' when the job certifies) -> its worst-case attack steps over the
    whole job. The job's total is the sum."""
    return _attack_steps(spec) | _certification_steps(spec)


def _attack_steps(spec: HardenSpec) -> dict[str, int]:
    evaluation = spec.evaluation
    if not evaluation.enabled:
        return {}
    # 'auto' is charged at the CPU's counts: a GPU worker attacks more samples because it is
    # faster, in about the time the CPU's take (the bound is there to bound a job's time).
    samples = max(evaluation.sample_counts("cpu"))
    # The upload and every hardened model are attacked alike.
    models = 1 + len(spec.methods)
    inputs = _cost_inputs(evaluation)
    return {name: models * samples * CATALOGUE[name].cost(inputs) for name in evaluation.attacks}


def _certification_steps(spec: HardenSpec) -> dict[str, int]:
    """{'certify': its worst-case model passes} when the job certifies (core.audit.certify), else
    empty. Each certified image costs n0 + n forward passes, for the upload and every hardened
    model. A forward pass is charged as one attack step although it is about a third of one (no
    backward): the bound stays an upper bound. 'auto' is charged at the CPU's counts like the
    attacks': the bound limits what a request asks for, and a GPU worker's larger 'auto' counts
    are the service's own choice, not the request's."""
    if not spec.certifies:
        return {}
    draws, images = spec.certification.counts("cpu")
    models = 1 + len(spec.methods)
    return {"certify": models * images * (spec.certification.n0 + draws)}


def run_steps(attack: str, evaluation: EvaluationSpec, *, features: int, classes: int) -> int:
    """Attack steps of one run of ``attack`` (at one of its budgets) on one sample with
    ``features`` input features and ``classes`` classes: the catalogue's price with the job's
    own counts, not the submit-time bound's: one run of APGD-T costs ``pgd_steps x target
    classes`` steps where FGSM's costs one."""
    info = CATALOGUE[attack]
    budgets = {"linf": 0, "l2": 0}
    if info.norm in budgets:
        budgets[info.norm] = 1  # one run is one budget
    inputs = CostInputs(
        budgets=budgets,
        pgd_steps=evaluation.pgd_steps,
        # The targeted attacks aim at the most likely wrong classes, at most all the others.
        target_classes=max(1, min(evaluation.target_classes, classes - 1)),
        jsma_iterations=max(1, math.floor(evaluation.jsma_max_fraction * features / 2)),
        jsma_classes=classes,
        cw_binary_steps=evaluation.cw_binary_steps,
        cw_iterations=evaluation.cw_iterations,
        square_queries=evaluation.square_queries,
    )
    return max(1, info.cost(inputs))


# A forward pass without a backward one costs about a third of a pass with it: a gradient-free
# attack's query (Square), a transfer's forward, a certification draw, a corrupted image.
FORWARD_ONLY = 1 / 3


def run_passes(attack: str, evaluation: EvaluationSpec, *, features: int, classes: int) -> float:
    """The model passes of one run of ``attack`` on one sample: its :func:`run_steps`, each a
    forward and backward pass, or a forward pass alone (:data:`FORWARD_ONLY`) for an attack
    that reads no gradient (``black_box``). The audit's progress and the job's ETA weigh runs
    by these, so that a stage's fraction follows its time: Square's 500 queries a budget are
    ten times FGSM-to-PGD's 20 steps, but each is a third of one."""
    steps = run_steps(attack, evaluation, features=features, classes=classes)
    return steps * FORWARD_ONLY if CATALOGUE[attack].black_box else float(steps)


def runs_per_model(evaluation: EvaluationSpec, attack: str) -> int:
    """How many runs of ``attack`` an audit makes on one model: one per budget of its norm (one
    for a minimum-norm attack, which searches the smallest perturbation instead, and for JSMA,
    whose one budget is its fraction of changed features)."""
    info = CATALOGUE[attack]
    if info.minimum_norm or info.norm == "l0":
        return 1
    return len(evaluation.budgets(info.norm, (0.0, 1.0)))


def audit_passes(
    evaluation: EvaluationSpec,
    *,
    features: int,
    classes: int,
    test_samples: int,
    device_type: str = "cpu",
    hardened_models: int = 1,
) -> float:
    """Every model pass one audit plans (core.audit.evaluate's progress total), each run at
    its :func:`run_passes`: the upload and ``hardened_models`` models, each attack at each of
    its budgets on its samples (the slow attacks on ``samples_slow``), a transfer attack's
    source added where the job lacks it and the transfer itself run on the hardened models only.
    Attacks stop early once every sample is fooled, so the passes run are at most these."""
    fast, slow = evaluation.sample_counts(device_type)
    fast = min(fast, test_samples)
    slow = min(slow, fast)
    names = list(evaluation.attacks)
    for name in evaluation.attacks:
        source = CATALOGUE[name].transfer_from
        if source is not None and source not in names:
            names.insert(names.index(name), source)
    total = 0.0
    for name in names:
        info = CATALOGUE[name]
        models = hardened_models + (info.transfer_from is None)
        per_run = run_passes(name, evaluation, features=features, classes=classes)
        total += models * runs_per_model(evaluation, name) * per_run * (slow if info.slow else fast)
    return total
