"""How right is a job's ETA? Two real jobs on builtin:digits, their eta_s at 25, 50 and 75% of
their actual duration against the time they really had left.

Each job runs through ``core.pipeline.run`` with the worker's ProgressReporter over the job's
stages (core.contract.job_plan.progress_stages), whose writes (stage, overall progress) are kept
with their times, as the job store keeps the last one. At each checkpoint the job row as it
stood then (running, started at the run's start, the last write's stage and progress) goes
through ``app.infra.job_resource.eta_seconds``: the number the job resource, the SSE events,
``harden status`` and the client's callback would have shown. Not through the embedded service:
its numbers are this same function over this same row, and a Celery worker, SQLite and the
contained child would add their start-up to the first seconds without changing what is measured
(the pace between stages), on a machine whose 2 cores are shared. The ETA before this change
(time running x (1 - progress) / progress, the stages' fixed shares) is computed from the same
writes beside it.

Jobs: the default job (defensive distillation at its defaults: auto student, default
evaluation, corruptions) and ``method: adversarial`` (PGD training at its defaults, the same
evaluation), on Papernot's MNIST CNN trained at T=1 on builtin:digits (the upload).

    .venv/bin/python bench/eta.py [--jobs default adversarial] [--threads 1] [--quick]
    .venv/bin/python bench/eta.py --calibrate

Writes bench/results/eta.md (``--quick``: a smoke run with tiny settings, to stdout only;
``--calibrate``: the run that priced the plan's passes, on builtin:mnist, to stdout).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.infra.db import Job, JobState  # noqa: E402
from app.infra.job_resource import eta_seconds  # noqa: E402
from core.contract.job_plan import job_plan, progress_stages, stage_fraction  # noqa: E402
from core.contract.spec import HardenSpec  # noqa: E402
from worker.progress import ProgressReporter  # noqa: E402

CHECKPOINTS = (0.25, 0.5, 0.75)
JOBS: dict[str, dict[str, Any]] = {
    "default": {"dataset": "builtin:digits"},
    "adversarial": {"dataset": "builtin:digits", "method": "adversarial"},
}
# The run that priced the plan's passes against each other (core.contract.job_plan: ATTACK_PASS,
# CORRUPTED_IMAGE, SOFT_LABEL_PASS): another dataset and upload than the measured jobs', cut
# down, so that the ETA is measured on jobs it was not fitted to.
CALIBRATION_BASE: dict[str, Any] = {
    "dataset": "builtin:mnist",
    "distillation": {"teacher_epochs": 1, "student_epochs": 2},
    "evaluation": {"samples": 30, "samples_slow": 10},
    "corruptions": {"samples": 100},
}
CALIBRATION: dict[str, dict[str, Any]] = {
    "default": CALIBRATION_BASE,
    "adversarial": CALIBRATION_BASE | {"method": "adversarial", "robust": {"epochs": 1}},
}
# A smoke run of the bench itself: seconds, not minutes.
QUICK: dict[str, Any] = {
    "teacher_epochs": 1,
    "student_epochs": 2,
    "robust": {"epochs": 1, "steps": 2},
    "evaluation": {
        "samples": 20, "samples_slow": 10, "pgd_steps": 5, "cw_iterations": 10,
        "cw_binary_steps": 2, "square_queries": 20,
    },
    "corruptions": {"samples": 50, "severities": [1]},
}  # fmt: skip


@dataclass(frozen=True)
class Write:
    """One progress write of the worker: seconds since the start, stage, overall progress."""

    seconds: float
    stage: str
    progress: float


@dataclass(frozen=True)
class Check:
    """The ETA shown at one checkpoint of a job, and the time it really had left."""

    fraction: float
    seconds: float
    stage: str
    progress: float
    eta_s: int | None
    before_s: float | None  # the ETA before this change, from the same progress
    actual_s: float
    # harden run's: the running stage's rest at its own pace (its start is known there)
    local_s: float | None = None


def checks(spec: HardenSpec, writes: list[Write], duration: float) -> list[Check]:
    """The job's ETA at each of :data:`CHECKPOINTS` of ``duration``, from the last write made
    by then, as the job resource computes it (and as ``harden run`` does, which also knows when
    the running stage began: its first write)."""
    started = datetime(2026, 1, 1, tzinfo=UTC)
    stages, plan = progress_stages(spec), job_plan(spec)
    found = []
    for fraction in CHECKPOINTS:
        at = fraction * duration
        last = [w for w in writes if w.seconds <= at][-1]
        row = Job(
            id="0" * 32, owner="bench", state=JobState.running, stage=last.stage,
            progress=last.progress, spec=spec.model_dump(mode="json"), started_at=started,
            model_sha256="", model_format="torchscript",
        )  # fmt: skip
        eta = eta_seconds(row, started + timedelta(seconds=at))
        before = at * (1 - last.progress) / last.progress if last.progress > 0 else None
        stage_start = next(w.seconds for w in writes if w.stage == last.stage)
        done = stage_fraction(stages, last.stage, last.progress)
        local = None
        if done is not None:
            local = plan.remaining_s(last.stage, done, at, stage_elapsed_s=at - stage_start)
        found.append(
            Check(fraction, at, last.stage, last.progress, eta, before, duration - at, local)
        )
    return found


def _upload(directory: Path, dataset: str = "builtin:digits", epochs: int = 5) -> Path:
    """Papernot's MNIST CNN trained at T=1 on ``dataset`` (Adam), as TorchScript."""
    import torch

    from bench.common import train
    from core.datasets.references import load_dataset
    from core.intake.zoo import build_zoo_model

    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = build_zoo_model("papernot_mnist", num_classes=10, input_shape=data.input_shape)
    model = train(model, data.x_train, data.y_train, temperature=1.0, epochs=epochs, seed=0)
    path = directory / "upload.pt"
    torch.jit.save(torch.jit.trace(model, data.x_test[:2]), str(path))
    return path


def calibrate(directory: Path) -> None:
    """Print each :data:`CALIBRATION` job's stages against the plan (µs per planned pass)."""
    upload = _upload(directory, "builtin:mnist", epochs=2)
    for name, config in CALIBRATION.items():
        spec = HardenSpec.model_validate(config)
        writes, duration, _ = run_job(spec, upload, directory / name)
        print(f"\n**{name}** ({duration:.0f} s):\n")
        print("\n".join(_stage_table(spec, writes, duration)), flush=True)


def run_job(spec: HardenSpec, upload: Path, out: Path) -> tuple[list[Write], float, Any]:
    """Run the job as a worker does; its writes (unthrottled in time: every 0.5 s, as the
    worker's default) and its duration."""
    from core.pipeline import run

    writes: list[Write] = []
    start = time.monotonic()
    reporter = ProgressReporter(
        lambda stage, progress: writes.append(Write(time.monotonic() - start, stage, progress)),
        progress_stages(spec),
        interval_s=0.5,
    )
    result = run(spec, upload, None, out, on_progress=reporter, device="cpu")
    return writes, time.monotonic() - start, result


def _stage_table(spec: HardenSpec, writes: list[Write], duration: float) -> list[str]:
    """Each stage's seconds beside its plan: the share of the work of the stages that scale with
    the spec against their share of the time, and the seconds per planned pass."""
    plan = job_plan(spec)
    starts: dict[str, float] = {}
    for write in writes:
        starts.setdefault(write.stage, write.seconds)
    names = list(starts)
    seconds = {
        name: (starts[names[i + 1]] if i + 1 < len(names) else duration) - starts[name]
        for i, name in enumerate(names)
    }
    work_total = sum(plan.work.values())
    time_total = sum(seconds[name] for name in names if name in plan.work)
    lines = [
        "| stage | seconds | planned | share of the time | share of the work | µs per pass |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        if name in plan.work:
            work = plan.work[name]
            lines.append(
                f"| {name} | {seconds[name]:.1f} | {work:,.0f} passes | "
                f"{seconds[name] / time_total:.3f} | {work / work_total:.3f} | "
                f"{1e6 * seconds[name] / work:.1f} |"
            )
        else:
            lines.append(
                f"| {name} | {seconds[name]:.1f} | {plan.fixed_s.get(name, 0.0):.0f} s | | | |"
            )
    return lines


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


class LoadSampler:
    """The 1-minute load average every ``interval_s`` seconds while a block runs."""

    def __init__(self, interval_s: float = 10.0) -> None:
        import threading

        self.samples: list[float] = []
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        values = self.samples or [os.getloadavg()[0]]
        mean = sum(values) / len(values)
        return f"{min(values):.1f}-{max(values):.1f} (mean {mean:.1f})"


def _commit() -> str:
    """The commit measured: git's, or BENCH_COMMIT's where the tree is an export without .git."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return found.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BENCH_COMMIT", "unknown")


def _described(name: str, args: argparse.Namespace) -> str:
    if name == "adversarial" and args.robust_epochs is not None:
        return f"{name} ({args.robust_epochs} epochs)"
    return f"{name} (its defaults)"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--dataset", default="builtin:digits", help="builtin:digits (seconds) or builtin:mnist"
    )
    parser.add_argument(
        "--robust-epochs", type=int, default=None, help="the adversarial job's (default: its own)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings, print only")
    parser.add_argument(
        "--calibrate", action="store_true", help="the plan's pricing run (CALIBRATION), print only"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/eta.md"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.calibrate:
        with tempfile.TemporaryDirectory() as scratch:
            calibrate(Path(scratch))
        return
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows: list[str] = []
    details: list[str] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as scratch, LoadSampler() as load:
        upload = _upload(Path(scratch), args.dataset)
        for name in args.jobs:
            config = JOBS[name] | {"dataset": args.dataset} | (QUICK if args.quick else {})
            if name == "adversarial" and args.robust_epochs is not None and not args.quick:
                config = config | {"robust": {"epochs": args.robust_epochs}}
            spec = HardenSpec.model_validate(config)
            writes, duration, result = run_job(spec, upload, Path(scratch) / name)
            label = result.report.verdict.label if result.report.verdict else "not audited"
            print(f"{name}: {duration:.0f} s, verdict {label}", flush=True)
            for check in checks(spec, writes, duration):
                error = None if check.eta_s is None else check.eta_s - check.actual_s
                ratio = None if check.eta_s is None else check.eta_s / check.actual_s
                before_ratio = None if check.before_s is None else check.before_s / check.actual_s
                if ratio is not None:
                    ratios.append(ratio)
                local_ratio = None if check.local_s is None else check.local_s / check.actual_s
                rows.append(
                    f"| {name} | {duration:.0f} | {check.fraction:.0%} | {check.stage} "
                    f"({check.progress:.3f}) | {_fmt(check.actual_s)} | {_fmt(check.eta_s)} | "
                    f"{_ratio(ratio)} | {_fmt(error)} | {_fmt(check.before_s)} | "
                    f"{_ratio(before_ratio)} | {_fmt(check.local_s)} | {_ratio(local_ratio)} |"
                )
                print(rows[-1], flush=True)
            details += ["", f"**{name}** ({duration:.0f} s, verdict {label}):", ""]
            details += _stage_table(spec, writes, duration)
    lines = [
        "# ETA error at 25/50/75% of a job (bench/eta.py)",
        "",
        f"Run {started_at} at commit {_commit()} on {_machine()}, {args.threads} torch thread; "
        f"1-minute load average {load.summary()} over the run (the 2 cores are shared with "
        "other workers' tests and builds: the pace changes under the job, as it does on a busy "
        f"worker). Upload: Papernot's MNIST CNN trained 5 epochs at T=1 on {args.dataset}; "
        f"jobs: {'; '.join(_described(name, args) for name in args.jobs)}. "
        "`eta_s` is app.infra.job_resource.eta_seconds over the job row as it stood at the "
        "checkpoint; *before* is the previous formula (time running x (1 - progress) / "
        "progress over the stages' fixed shares) from the same progress; *harden run* is the "
        "plan with the running stage's rest at its own pace, which `harden run` can read (it "
        "knows when the stage began; the job row does not). Ratio: ETA / the time the job "
        "really had left; error: eta_s - that time, in seconds.",
        "",
        "| job | duration s | at | stage (progress) | actual left s | eta_s | ratio | error s | "
        "before s | before ratio | harden run s | harden run ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Each stage against its plan (core.contract.job_plan): the stages that scale with the "
        "spec in sample passes (their shares of those stages' time and work), load, export and "
        "report in seconds:",
        *details,
        "",
    ]
    text = "\n".join(lines)
    if args.quick:
        print(text)
        return
    args.out.write_text(text)
    print(f"wrote {args.out}; ratios {[round(r, 2) for r in ratios]}")


if __name__ == "__main__":
    main()
