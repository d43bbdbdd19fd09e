"""An audit in shards (core.audit.shards): however many processes compute its shards, in whatever
order, it merges to the one-process audit; one shard is the attacks run on all samples at once
and N shards the attacks run on each strided share with its own seed; a resumed audit computes
only the shards it lacks; a shard file that is not whole, or not this audit's, is never used."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core.audit.evaluate import Audit, attack_like_student, audit, draw_samples
from core.audit.registry import REGISTRY
from core.audit.runs import AttackCall
from core.audit.shards import (
    LocalBroker,
    ModelShard,
    ShardResult,
    ShardRun,
    load,
    read,
    shard_file,
    shard_of,
    shard_seed,
)
from core.contract.evaluation_cost import audit_passes
from core.contract.spec import HardenSpec
from tests.core.audit.test_evaluate import _dataset
from tests.core.robust_models import distilled, undefended

# Slow attacks (CW-L2, Square: seeded) on a prefix, a seeded fast one, and a transfer from the
# upload's PGD adversarials: every kind of run a shard holds.
_ATTACKS = ["fgsm_ce", "pgd_linf_margin", "cw_l2", "square", "transfer"]


def _spec(**evaluation: object) -> HardenSpec:
    settings = {
        "attacks": _ATTACKS,
        "samples": 24,
        "samples_slow": 10,
        "epsilons_linf": [0.1, 0.3],
        "epsilons_l2": [1.0],
        "pgd_steps": 5,
        "cw_binary_steps": 2,
        "cw_iterations": 10,
        "square_queries": 40,
        "seed": 3,
        "shard_samples": 10,  # 3 shards of 8 samples, 4, 3 and 3 of them in the slow prefix
        **evaluation,
    }
    return HardenSpec(dataset="builtin:digits", evaluation=settings)


def _numbers(done: Audit) -> dict[str, Any]:
    """Everything the audit reports but its timings."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(
        {
            "evaluation": done.evaluation.model_dump(mode="json"),
            "verdict": done.verdict.model_dump(mode="json"),
            "student": done.student_outcomes.model_dump(mode="json"),
        }
    )


@pytest.fixture(scope="module")
def one_process() -> Audit:
    return audit(undefended(), distilled(100.0), _dataset(), _spec(), device="cpu")


class _HandedOff(Exception):
    """A helper's audit stops once the shards it could claim are done."""


class _Scripted:
    """A broker that hands out the shards it is given, in that order, and answers waits from a
    folder shared with other processes (or stops: a helper leaves the merge to the job)."""

    def __init__(self, claims: list[int], shared: Path, *, helper: bool = False) -> None:
        self.claims, self.shared, self.helper = list(claims), shared, helper
        self.claimed: list[int] = []
        self.waited: list[int] = []
        self.finished: dict[int, Path] = {}
        self.count: int | None = None

    def start(self, count: int) -> None:
        self.count = count

    def claim(self) -> int | None:
        if not self.claims:
            return None
        self.claimed.append(self.claims.pop(0))
        return self.claimed[-1]

    def wait(self, shard: int) -> Path | None:
        if self.helper:
            raise _HandedOff
        self.waited.append(shard)
        path = shard_file(self.shared, shard)
        return path if path.is_file() else None

    def done(self, shard: int, path: Path) -> None:
        assert shard_of(path.name) == shard and path.is_file()
        self.finished[shard] = path


def test_shards_computed_elsewhere_and_out_of_order_merge_to_the_one_process_audit(
    one_process: Audit, tmp_path: Path
) -> None:
    # A helper computes the middle shard and leaves; the job computes the last, then the first,
    # and takes the middle one from the shared folder: the audit the one process made.
    helper = _Scripted([1], tmp_path, helper=True)
    with pytest.raises(_HandedOff):
        audit(undefended(), distilled(100.0), _dataset(), _spec(), device="cpu",
              shards=helper, shard_dir=tmp_path)  # fmt: skip
    job = _Scripted([2, 0], tmp_path)
    calls: list[tuple[int, int]] = []
    done = audit(
        undefended(), distilled(100.0), _dataset(), _spec(), device="cpu", shards=job,
        shard_dir=tmp_path, on_progress=lambda stage, d, total: calls.append((d, total)),
    )  # fmt: skip
    assert helper.count == job.count == 3
    assert set(helper.finished) == {1} and set(job.finished) == {0, 2} and job.waited == [1]
    assert _numbers(done) == _numbers(one_process)
    assert done.evaluation.seconds > 0
    # The middle shard's passes are skipped, not run: the progress still ends at its total,
    # the audit's plan (the job's ETA), which shards do not change.
    done_passes = [d for d, _ in calls]
    assert done_passes == sorted(done_passes) and calls[-1][0] == calls[-1][1]
    plan = audit_passes(done.upload.settings, features=64, classes=10, test_samples=24)
    assert calls[-1][1] == round(plan)
    transfer = done.upload.transfer_sources[("pgd_linf_margin", 0.1)]
    assert torch.equal(transfer, one_process.upload.transfer_sources[("pgd_linf_margin", 0.1)])


class _Shared:
    """Claims shared by two processes (threads here): each shard to the first who asks."""

    def __init__(self, count: int, folder: Path) -> None:
        self.count, self.folder = count, folder
        self.lock = threading.Lock()
        self.claimed: dict[int, str] = {}
        self.ready = {shard: threading.Event() for shard in range(count)}

    def broker(self, name: str) -> Any:
        shared = self

        class Broker:
            def start(self, count: int) -> None:
                assert count == shared.count

            def claim(self) -> int | None:
                with shared.lock:
                    free = [s for s in range(shared.count) if s not in shared.claimed]
                    if not free:
                        return None
                    shared.claimed[free[0]] = name
                    return free[0]

            def wait(self, shard: int) -> Path | None:
                assert shared.ready[shard].wait(timeout=120)
                return shard_file(shared.folder, shard)

            def done(self, shard: int, path: Path) -> None:
                shared.ready[shard].set()

        return Broker()


def test_two_processes_sharing_the_claims_merge_to_the_one_process_audit(
    one_process: Audit, tmp_path: Path
) -> None:
    shared = _Shared(3, tmp_path)
    results: dict[str, Audit] = {}

    def run(name: str) -> None:
        results[name] = audit(
            undefended(), distilled(100.0), _dataset(), _spec(), device="cpu",
            shards=shared.broker(name), shard_dir=tmp_path,
        )  # fmt: skip

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert set(results) == {"a", "b"} and set(shared.claimed) == {0, 1, 2}
    assert _numbers(results["a"]) == _numbers(results["b"]) == _numbers(one_process)


def test_one_shard_is_every_attack_on_all_samples_at_once() -> None:
    # shard_samples >= samples: one shard, drawn with the seed itself, as the audit always was.
    spec = _spec(shard_samples=24)
    model = distilled(100.0)
    done = audit(undefended(), model, _dataset(), spec, device="cpu")
    ev = done.upload.settings
    x, y = draw_samples(_dataset(), 24, ev.seed)
    for summary in done.evaluation.models["student"].attacks:
        attack = REGISTRY[summary.attack]
        xs, ys = (x[:10], y[:10]) if attack.slow else (x, y)
        for epsilon, point in zip(attack.budgets(ev), summary.points, strict=False):
            source = done.upload.transfer_sources.get((attack.transfer_from or "", epsilon))
            call = AttackCall(
                model=model, x=xs, labels=ys, epsilon=epsilon, settings=ev, bounds=(0.0, 1.0),
                num_classes=10, source_adversarial=source,
            )  # fmt: skip
            result = attack.run(call)
            robust = result.correct_before & ~result.success
            assert point.samples == len(xs)
            assert point.correct_before == int(result.correct_before.sum())
            assert point.robust_accuracy == float(robust.sum()) / len(xs)


def test_each_shard_is_every_attack_on_its_strided_share_with_its_own_seed() -> None:
    # 3 shards: sample i in shard i mod 3, whose random starts are drawn from shard_seed(seed, k).
    spec = _spec(attacks=["pgd_linf_margin"], epsilons_linf=[0.1, 0.2])
    model = distilled(100.0)
    done = audit(undefended(), model, _dataset(), spec, device="cpu")
    ev = done.upload.settings
    x, y = draw_samples(_dataset(), 24, ev.seed)
    seeds = {shard_seed(ev.seed, shard) for shard in range(3)}
    assert len(seeds) == 3 and shard_seed(ev.seed, 0) == ev.seed
    for budget in done.student_outcomes.budgets:
        expected = [False] * 24
        for shard in range(3):
            call = AttackCall(
                model=model, x=x[shard::3], labels=y[shard::3], epsilon=budget.epsilon,
                settings=ev, bounds=(0.0, 1.0), num_classes=10, seed=shard_seed(ev.seed, shard),
            )  # fmt: skip
            result = REGISTRY["pgd_linf_margin"].run(call)
            expected[shard::3] = (result.correct_before & ~result.success).tolist()
        assert budget.robust == expected


class _Counted(nn.Module):
    """``model``, keeping the size of every batch it was run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        return self.model(x)


class _Spy:
    """A broker's calls, recorded."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker, self.calls = broker, []

    def start(self, count: int) -> None:
        self.broker.start(count)

    def claim(self) -> int | None:
        shard = self.broker.claim()
        self.calls.append(("claim", shard))
        return shard

    def wait(self, shard: int) -> Path | None:
        path = self.broker.wait(shard)
        self.calls.append(("wait", shard, path is not None))
        return path

    def done(self, shard: int, path: Path) -> None:
        self.calls.append(("done", shard))
        self.broker.done(shard, path)


def test_a_resumed_audit_computes_only_the_shard_it_lacks(tmp_path: Path) -> None:
    upload, student = _Counted(undefended()), _Counted(distilled(100.0))
    spec = _spec(attacks=["fgsm_ce", "pgd_linf_margin", "transfer"])
    first = audit(upload, student, _dataset(), spec, device="cpu", shard_dir=tmp_path / "first")
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == [
        f"audit-{shard}.safetensors" for shard in range(3)
    ]
    shard_file(tmp_path / "first", 1).unlink()  # the earlier attempt died in the middle shard
    upload.batches.clear()
    student.batches.clear()
    spy = _Spy(LocalBroker(3, resume_from=tmp_path / "first"))
    calls: list[tuple[int, int, int]] = []  # (done, total, broker calls so far)
    again = audit(
        upload, student, _dataset(), spec, device="cpu", shards=spy, shard_dir=tmp_path / "next",
        on_progress=lambda stage, d, total: calls.append((d, total, len(spy.calls))),
    )  # fmt: skip
    assert spy.calls == [
        ("claim", 1), ("done", 1), ("claim", None), ("wait", 0, True), ("wait", 2, True)
    ]  # fmt: skip
    assert [p.name for p in (tmp_path / "next").iterdir()] == ["audit-1.safetensors"]
    assert max(upload.batches + student.batches) == len(range(1, 24, 3))  # shard 1's 8 samples
    assert _numbers(again) == _numbers(first)
    # Shard 1 advances the progress run by run, to about a third; the two read back are
    # skipped, and it ends at its total.
    total = calls[-1][1]
    computing = [d for d, _, broker_calls in calls if broker_calls == 1]  # shard 1's
    assert len(computing) > 3 and 0 < max(computing) < total / 2
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls) and calls[-1][0] == total


def _small_result(digest: str = "d" * 64) -> ShardResult:
    run = ShardRun(
        attack="pgd_linf_margin", epsilon=0.1, seconds=0.5,
        correct_before=torch.tensor([True, True, False]),
        success=torch.tensor([True, False, False]),
        sizes=torch.tensor([0.1, 0.05, 0.0]), adversarial=torch.rand(3, 1, 8, 8),
    )  # fmt: skip
    model = ModelShard(
        seconds=1.0, clean=torch.tensor([True, True, False]), abs_logits=torch.rand(3, 10),
        softmax_l1=torch.rand(3, dtype=torch.float64), margin_l1=torch.rand(3, dtype=torch.float64),
        runs=[run],
    )  # fmt: skip
    return ShardResult(shard=2, shards=3, digest=digest, seconds=1.5, models={"uploaded": model})


def test_a_shard_file_reads_back_whole(tmp_path: Path) -> None:
    result = _small_result()
    folder = tmp_path / "shards"
    path = result.save(folder)
    assert path.name == "audit-2.safetensors" and shard_of(path.name) == 2
    assert [p.name for p in folder.iterdir()] == [path.name]  # no partial file left
    back = load(path, digest=result.digest, shard=2)
    assert back.seconds == result.seconds and back.shards == 3
    theirs, ours = back.models["uploaded"], result.models["uploaded"]
    for name in ("clean", "abs_logits", "softmax_l1", "margin_l1"):
        assert torch.equal(getattr(theirs, name), getattr(ours, name))
    for name in ("correct_before", "success", "sizes", "adversarial"):
        assert torch.equal(getattr(theirs.runs[0], name), getattr(ours.runs[0], name))
    assert shard_of("audit-2.safetensors.partial") is None and shard_of("../audit-1") is None


def test_a_tampered_or_foreign_shard_file_is_refused(tmp_path: Path) -> None:
    path = _small_result().save(tmp_path)
    data = bytearray(path.read_bytes())
    # Another audit's shard, or another shard of this one: refused.
    with pytest.raises(ValueError, match="other settings"):
        load(path, digest="e" * 64, shard=2)
    with pytest.raises(ValueError, match="not shard 1"):
        load(path, digest="d" * 64, shard=1)
    # One byte of a tensor changed, the file cut short, the header broken: refused whole.
    changed = bytearray(data)
    changed[-5] ^= 0xFF
    path.write_bytes(bytes(changed))
    with pytest.raises(ValueError, match="changed after it was written"):
        load(path, digest="d" * 64, shard=2)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="not an audit shard result"):
        read(path)
    path.write_bytes(b"\x10" + bytes(data[1:]))
    with pytest.raises(ValueError, match="not an audit shard result"):
        read(path)
    # A resumed attempt does not count such a file as done.
    assert LocalBroker(3, resume_from=tmp_path).wait(2) is None


def test_an_audit_computes_itself_a_shard_whose_file_is_refused(
    one_process: Audit, tmp_path: Path
) -> None:
    # The shard handed over belongs to another audit (another seed): computed here instead.
    other = tmp_path / "other"
    audit(undefended(), distilled(100.0), _dataset(), _spec(seed=4), device="cpu",
          shard_dir=other)  # fmt: skip
    job = _Scripted([0, 2], other)
    done = audit(
        undefended(), distilled(100.0), _dataset(), _spec(), device="cpu", shards=job,
        shard_dir=tmp_path / "mine",
    )  # fmt: skip
    assert job.waited == [1] and set(job.finished) == {0, 1, 2}
    assert _numbers(done) == _numbers(one_process)


def test_a_baseline_is_attacked_in_the_audits_shards() -> None:
    # The job's model attacked again as a baseline: sample by sample what the audit measured.
    spec = _spec(attacks=["pgd_linf_margin", "square", "transfer"])
    model = distilled(100.0)
    done = audit(undefended(), model, _dataset(), spec, device="cpu")
    again = attack_like_student(model, _dataset(), spec, done.upload)
    assert again == done.student_outcomes
