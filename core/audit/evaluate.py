"""The robustness audit: every attack against the uploaded model and the student, side by side.

Samples are drawn once from the test split with the spec's seed and shared by both models (the
slow attacks use a prefix of them). The audit is computed in shards of those samples, by this
process or others (:mod:`core.audit.shards`: sample i in shard i mod N, each shard's random
draws seeded from the seed and its number), and the shards merged in sample order
(:mod:`core.audit.merge`). What each attack is and how one run of it is called live in
:mod:`core.audit.registry`; the verdict is decided in :mod:`core.audit.verdict`.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.audit.attacks.base import margin
from core.audit.merge import TransferSources, amplitude, merge_model
from core.audit.registry import REGISTRY, Attack
from core.audit.runs import AttackCall, perturbation_sizes
from core.audit.schema import (
    Evaluation,
    GradientAmplitude,
    ModelRobustness,
    Verdict,
)
from core.audit.shards import (
    LocalBroker,
    ModelShard,
    ShardBroker,
    ShardResult,
    ShardRun,
    digest_of,
    shard_count,
    shard_seed,
)
from core.audit.shards import load as load_shard
from core.audit.verdict import decide
from core.contract.evaluation import EvaluationSpec
from core.contract.evaluation_cost import audit_passes, run_passes
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.device import pick_device
from core.errors import JobCancelledError
from core.names import CancelFn, ProgressFn
from core.report.comparison import PerSampleOutcomes


@dataclass
class _Progress:
    """Turns the attacks' per-step hooks into ``on_progress("evaluate", done, total)`` calls
    and cancellation checks, counted in model passes on one sample
    (core.contract.evaluation_cost.run_passes) over every run of the audit, so that the
    fraction grows with the work done: an APGD-T run weighs its ``pgd_steps x targets`` steps
    on every sample, an FGSM run its one, a Square query a third of a step. A run that stops
    early (every sample fooled) counts its planned passes as done when it returns."""

    on_progress: ProgressFn
    should_cancel: CancelFn
    total: float  # the passes of every run planned
    done: float = 0.0  # the passes of the runs finished
    run: float = 0.0  # the planned passes of the run under way
    last: int = field(default=-1)

    def start_run(self, passes: float) -> None:
        self.run = passes

    def hook(self, step: int, total: int) -> None:
        if self.should_cancel():
            raise JobCancelledError(
                "the job was cancelled during the robustness evaluation",
                hint="submit it again to restart; nothing of this run is kept",
            )
        fraction = min(max(step, 0), total) / total if total > 0 else 0.0
        self._report(self.done + self.run * fraction)

    def finish_run(self) -> None:
        self.done += self.run
        self.run = 0.0
        self.hook(0, 1)

    def skip(self, passes: float) -> None:
        """Passes planned but not run here (the upload's half reused from an earlier audit)."""
        self.done += passes

    def complete(self) -> None:
        """Every run returned: the stage is at its total (the sums of floats may differ)."""
        self._report(self.total)

    def _report(self, done: float) -> None:
        total = round(self.total)
        passes = min(round(done), total)
        if passes != self.last:
            self.last = passes
            self.on_progress("evaluate", passes, total)


def _run_passes(attack: Attack, ev: EvaluationSpec, x: Tensor, num_classes: int) -> float:
    """The planned passes of one run of ``attack`` on the samples ``x``."""
    features = x[0].numel() if len(x) else 1
    return len(x) * run_passes(attack.name, ev, features=features, classes=num_classes)


def draw_samples(data: Dataset, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` test samples, the same for every model, chosen with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.x_test), generator=gen)[: min(count, len(data.x_test))]
    return data.x_test[index], data.y_test[index]


def gradient_amplitude(model: nn.Module, x: Tensor, labels: Tensor) -> GradientAmplitude:
    """Per-sample L1 norms of d softmax(z)_y / dx (the paper's adversarial gradient) and of
    d margin / dx. Samples are independent in eval mode, so one backward of the sum suffices."""
    return amplitude(*_gradient_l1(model, x, labels))


def _gradient_l1(model: nn.Module, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(d softmax(z)_y / dx, d margin / dx): their per-sample L1 norms, float64 on the CPU."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    probs = logits.softmax(1).gather(1, labels[:, None]).sum()
    (g_soft,) = torch.autograd.grad(probs, x, retain_graph=True)
    (g_margin,) = torch.autograd.grad(margin(logits, labels).sum(), x)
    soft = g_soft.flatten(1).abs().sum(1).double().cpu()
    marg = g_margin.flatten(1).abs().sum(1).double().cpu()
    return soft, marg


@dataclass
class UploadAudit:
    """The uploaded model's half of one audit: a job that runs several methods
    (core.pipeline) audits every method's model beside the same upload on the same samples, so
    the upload is attacked once and its half handed to the next :func:`audit` (the autoattack
    preset on a robust upload takes tens of minutes on a CPU)."""

    settings: EvaluationSpec
    samples: Tensor
    robustness: ModelRobustness
    transfer_sources: TransferSources


def _attack_model(
    role: str,
    model: nn.Module,
    part: _Part,
    progress: _Progress,
    transfer_sources: TransferSources,
) -> ModelShard:
    """Every attack at every budget on one model and one shard's samples (the slow attacks on
    the shard's share of the prefix), per sample. The upload's adversarials that a transfer
    attack replays are added to ``transfer_sources`` (the shard's); the student's transfer run
    reads them."""
    started = time.perf_counter()
    model = model.to(part.x.device).eval()
    with torch.no_grad():
        logits = model(part.x)
    ev = part.ev
    source_names = {REGISTRY[name].transfer_from for name in ev.attacks}
    runs = []
    for name in ev.attacks:
        attack = REGISTRY[name]
        if attack.transfer_from is not None and role == "uploaded":
            continue  # the uploaded model supplies the adversarials: attacking it says nothing
        xs, ys = (part.x[: part.slow], part.y[: part.slow]) if attack.slow else (part.x, part.y)
        for epsilon in attack.budgets(ev):
            if not len(xs):  # a shard past the slow attacks' prefix (more shards than samples)
                runs.append(_no_run(name, epsilon, attack.measures_perturbation))
                continue
            source_adversarial = None
            if attack.transfer_from is not None:
                source_adversarial = transfer_sources.get((attack.transfer_from, epsilon))
            call = AttackCall(
                model=model, x=xs, labels=ys, epsilon=epsilon, settings=ev, bounds=part.bounds,
                num_classes=part.num_classes, on_step=progress.hook,
                source_adversarial=source_adversarial, seed=part.seed,
            )  # fmt: skip
            progress.start_run(_run_passes(attack, ev, xs, part.num_classes))
            start = time.perf_counter()
            result = attack.run(call)
            seconds = time.perf_counter() - start
            sizes = None
            if attack.measures_perturbation:
                sizes = perturbation_sizes(attack.norm, result.adversarial, xs).detach().cpu()
            adversarial = None
            if role == "uploaded" and name in source_names:
                transfer_sources[(name, epsilon)] = result.adversarial
                adversarial = result.adversarial.detach().cpu()
            runs.append(
                ShardRun(
                    attack=name, epsilon=epsilon, seconds=seconds,
                    correct_before=result.correct_before.cpu(), success=result.success.cpu(),
                    sizes=sizes, adversarial=adversarial,
                )
            )  # fmt: skip
            progress.finish_run()
    softmax_l1, margin_l1 = _gradient_l1(model, part.x, part.y)
    return ModelShard(
        seconds=time.perf_counter() - started,
        clean=(logits.argmax(1) == part.y).cpu(),
        abs_logits=logits.abs().detach().cpu(),
        softmax_l1=softmax_l1,
        margin_l1=margin_l1,
        runs=runs,
    )


def _no_run(attack: str, epsilon: float | None, measured: bool) -> ShardRun:
    """A run on no samples: nothing attacked, nothing fooled."""
    none = torch.zeros(0, dtype=torch.bool)
    return ShardRun(
        attack=attack, epsilon=epsilon, seconds=0.0, correct_before=none, success=none,
        sizes=torch.zeros(0) if measured else None,
    )  # fmt: skip


@dataclass(frozen=True)
class _Part:
    """One shard of an audit's samples: ``x`` and ``y`` its samples in sample order, the slow
    attacks on its first ``slow``, its attacks' random draws seeded with ``seed``."""

    x: Tensor
    y: Tensor
    slow: int
    seed: int
    ev: EvaluationSpec
    bounds: tuple[float, float]
    num_classes: int


@dataclass(frozen=True)
class _Sharding:
    """An audit's samples and settings dealt out to its shards (core.audit.shards)."""

    x: Tensor
    y: Tensor
    ev: EvaluationSpec
    bounds: tuple[float, float]
    num_classes: int

    @property
    def count(self) -> int:
        return shard_count(len(self.x), self.ev.shard_samples)

    def part(self, shard: int) -> _Part:
        chosen = slice(shard, None, self.count)
        slow = min(int(self.ev.samples_slow), len(self.x))
        return _Part(
            self.x[chosen].contiguous(), self.y[chosen].contiguous(),
            len(range(shard, slow, self.count)), shard_seed(self.ev.seed, shard), self.ev,
            self.bounds, self.num_classes,
        )  # fmt: skip

    def compute(
        self,
        shard: int,
        models: dict[str, nn.Module],
        progress: _Progress,
        kept_sources: TransferSources,
        digest: str,
    ) -> ShardResult:
        """Shard ``shard`` of the audit of ``models`` (the upload first, when it is attacked:
        the student's transfer run replays its adversarials; else those of ``kept_sources``)."""
        started = time.perf_counter()
        part = self.part(shard)
        chosen = slice(shard, None, self.count)
        sources = {key: adv[chosen].contiguous() for key, adv in kept_sources.items()}
        done = {
            role: _attack_model(role, model, part, progress, sources)
            for role, model in models.items()
        }
        return ShardResult(shard, self.count, digest, time.perf_counter() - started, done)

    def passes(self, shard: int, roles: Sequence[str]) -> float:
        """The model passes shard ``shard`` plans for the models ``roles``."""
        part = self.part(shard)
        total = 0.0
        for name in self.ev.attacks:
            attack = REGISTRY[name]
            models = sum(role != "uploaded" or attack.transfer_from is None for role in roles)
            xs = part.x[: part.slow] if attack.slow else part.x
            runs = len(attack.budgets(self.ev))
            total += models * runs * _run_passes(attack, self.ev, xs, self.num_classes)
        return total


def _planned_passes(ev: EvaluationSpec, x: Tensor, num_classes: int, *, upload: bool) -> float:
    """The model passes an audit with the resolved settings ``ev`` plans on the samples ``x``:
    the hardened model's, and the upload's too when ``upload``
    (core.contract.evaluation_cost.audit_passes, which the job's ETA reads)."""
    features = x[0].numel() if len(x) else 1
    both = audit_passes(
        ev, features=features, classes=num_classes, test_samples=len(x), device_type="cpu"
    )
    if upload:
        return both
    return both - _upload_passes(ev, x, num_classes)


def _upload_passes(ev: EvaluationSpec, x: Tensor, num_classes: int) -> float:
    """The upload's share of the audit's passes (every attack but a transfer, which it feeds)."""
    fast, slow = len(x), min(int(ev.samples_slow), len(x))
    return sum(
        _run_passes(REGISTRY[name], ev, x[: slow if REGISTRY[name].slow else fast], num_classes)
        * len(REGISTRY[name].budgets(ev))
        for name in ev.attacks
        if REGISTRY[name].transfer_from is None
    )


def _with_transfer_sources(ev: EvaluationSpec) -> EvaluationSpec:
    """``ev`` with every transfer attack's source attack added just before it where missing."""
    attack_list = list(ev.attacks)
    for name in ev.attacks:
        source = REGISTRY[name].transfer_from
        if source is not None and source not in attack_list:
            attack_list.insert(attack_list.index(name), source)
    if attack_list == ev.attacks:
        return ev
    return ev.model_copy(update={"attacks": attack_list})


def evaluate(
    uploaded: nn.Module, student: nn.Module, data: Dataset, spec: HardenSpec, **options: Any
) -> tuple[Evaluation, Verdict]:
    """Attack both deployed models (raw logits, eval mode) and decide the verdict: :func:`audit`
    (same options) without the upload's half."""
    done = audit(uploaded, student, data, spec, **options)
    return done.evaluation, done.verdict


@dataclass
class Audit:
    """One audit: its evaluation, its verdict, and the upload's half of it (to hand to the audit
    of another method's model on the same upload)."""

    evaluation: Evaluation
    verdict: Verdict
    upload: UploadAudit
    student_outcomes: PerSampleOutcomes  # per sample, for a paired comparison with a baseline


def audit(
    uploaded: nn.Module,
    student: nn.Module,
    data: Dataset,
    spec: HardenSpec,
    *,
    device: str | torch.device | None = None,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    method: str | None = None,
    upload: UploadAudit | None = None,
    shards: ShardBroker | None = None,
    shard_dir: Path | None = None,
) -> Audit:
    """Attack both deployed models (raw logits, eval mode), decide the verdict, and return both
    with the upload's half. ``method``: the title of the hardening method that made ``student``,
    named in the verdict when given (the audit is the same for every method). ``upload``: that
    half from an earlier audit of the same job; reused, not attacked again, when its settings and
    samples are these.

    The audit is computed in shards of its samples (core.audit.shards): ``shards`` says which
    this process computes and hands it the others' result files (None: a
    :class:`~core.audit.shards.LocalBroker`, every shard here); each computed here is written to
    ``shard_dir`` (None: a temporary folder) as ``audit-<k>.safetensors``. A shard file that
    does not hold this audit's shard is refused and the shard computed here."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    bounds = (float(spec.input_range[0]), float(spec.input_range[1]))
    # 'auto' sample counts are sized by the device the attacks run on
    # (core.contract.evaluation.AUTO_SAMPLES).
    samples, samples_slow = spec.evaluation.sample_counts(dev.type)
    ev = spec.evaluation.resolved(data.input_shape, bounds, dev.type)
    # A transfer attack reuses its source attack's adversarials on the uploaded model.
    ev = _with_transfer_sources(ev)
    progress = _Progress(
        on_progress or (lambda stage, done, total: None),
        should_cancel or (lambda: False),
        0.0,
    )
    x, y = draw_samples(data, samples, ev.seed)
    x, y = x.to(dev), y.to(dev)
    progress.total = _planned_passes(ev, x, data.num_classes, upload=True)
    kept = upload if upload and upload.settings == ev and torch.equal(upload.samples, x) else None
    models = {"uploaded": uploaded, "student": student}
    if kept is not None:
        del models["uploaded"]
        progress.skip(_upload_passes(ev, x, data.num_classes))
    sharding = _Sharding(x, y, ev, bounds, data.num_classes)
    digest = digest_of(
        settings=ev.model_dump_json(), samples=x, labels=y, models=(uploaded, student),
        roles=models, shards=sharding.count,
    )  # fmt: skip
    broker = shards if shards is not None else LocalBroker(sharding.count)
    broker.start(sharding.count)
    kept_sources = kept.transfer_sources if kept is not None else {}

    def compute(shard: int) -> ShardResult:
        return sharding.compute(shard, models, progress, kept_sources, digest)

    with _folder(shard_dir) as folder:
        results = _collect(
            broker, sharding.count, compute, folder, digest, progress,
            lambda shard: sharding.passes(shard, list(models)),
        )  # fmt: skip
    robustness: dict[str, ModelRobustness] = {}
    per_sample: dict[str, PerSampleOutcomes] = {}
    transfer_sources: TransferSources = {}
    for role in models:
        robustness[role], per_sample[role], sources = merge_model(
            role, [result.models[role] for result in results], ev, dev
        )
        transfer_sources.update(sources)
    if kept is None:
        kept = UploadAudit(ev, x, robustness["uploaded"], transfer_sources)
    evaluation = Evaluation(
        samples=len(x),
        samples_slow=min(samples_slow, len(x)),
        preset=ev.preset,
        method=method,
        seed=ev.seed,
        device=str(dev),
        input_range=bounds,
        threat_model=ev.threat_model,
        epsilons_linf=ev.budgets("linf", bounds),
        epsilons_l2=ev.budgets("l2", bounds),
        models={"uploaded": kept.robustness, "student": robustness["student"]},
        seconds=sum(result.seconds for result in results),
    )
    progress.complete()
    return Audit(evaluation, decide(evaluation), kept, per_sample["student"])


def _collect(
    broker: ShardBroker,
    count: int,
    compute: Callable[[int], ShardResult],
    folder: Path,
    digest: str,
    progress: _Progress,
    passes: Callable[[int], float],
) -> list[ShardResult]:
    """Every shard's result, in shard order: those ``broker`` lets this process claim computed
    here first, then, for each of the others, the file it hands over (refused: computed here
    too, as one whose claimant died). Each computed here is written to ``folder`` and handed to
    ``broker.done``; the progress skips the passes of those computed elsewhere."""
    results: dict[int, ShardResult] = {}

    def here(shard: int) -> None:
        results[shard] = compute(shard)
        broker.done(shard, results[shard].save(folder))

    while (shard := broker.claim()) is not None:
        if not 0 <= shard < count or shard in results:
            raise ValueError(f"the shard broker handed out shard {shard} of {count} again")
        here(shard)
    for shard in range(count):
        if shard in results:
            continue
        progress.hook(0, 1)  # a cancel is honoured between waits too
        path = broker.wait(shard)
        found = None
        if path is not None:
            with contextlib.suppress(ValueError):  # refused whole: computed here instead
                found = load_shard(path, digest=digest, shard=shard)
        if found is None:
            here(shard)
        else:
            results[shard] = found
            progress.skip(passes(shard))
    return [results[shard] for shard in range(count)]


@contextlib.contextmanager
def _folder(shard_dir: Path | None) -> Iterator[Path]:
    """``shard_dir``, or a temporary folder removed afterwards."""
    if shard_dir is not None:
        yield Path(shard_dir)
        return
    with tempfile.TemporaryDirectory(prefix="audit-shards-") as scratch:
        yield Path(scratch)


def attack_like_student(
    model: nn.Module,
    data: Dataset,
    spec: HardenSpec,
    upload: UploadAudit,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> PerSampleOutcomes:
    """Attack one more model exactly as an audit attacked its student: the same settings, the
    same samples (drawn again with the same seed and checked equal) in the same shards with the
    same random draws, the same adversarials of the upload for a transfer attack: a baseline
    beside the job's model (core.audit.baseline)."""
    ev, x = upload.settings, upload.samples
    drawn, y = draw_samples(data, len(x), ev.seed)
    if not torch.equal(drawn.to(x.device), x):
        raise ValueError("the audit's samples cannot be drawn again from this dataset")
    bounds = (float(spec.input_range[0]), float(spec.input_range[1]))
    progress = _Progress(
        on_progress or (lambda stage, done, total: None),
        should_cancel or (lambda: False),
        _planned_passes(ev, x, data.num_classes, upload=False),
    )
    sharding = _Sharding(x, y.to(x.device), ev, bounds, data.num_classes)
    parts = [
        sharding.compute(shard, {"student": model}, progress, upload.transfer_sources, "")
        for shard in range(sharding.count)
    ]
    _, per_sample, _ = merge_model(
        "student", [part.models["student"] for part in parts], ev, x.device
    )
    progress.complete()
    return per_sample
