"""What containment costs, and how fast hostile inputs are refused.

1. **Overhead**: the same job through the worker's own ``run_job`` (SQLite job store, local
   artifact folder), alternately in-process (``HARDEN_CONTAIN_MODELS=false``) and contained (a
   child forked from the fork server, confined with Landlock and its own network namespace,
   progress over a pipe). The default job is the README's: Papernot's MNIST CNN (bench.common's
   cached T=1 model) with the default spec on builtin:mnist, default evaluation included.
   The fork server is started before the first timed run, as a worker does at its first job.
2. **Refusals**: CPU seconds the API's upload check takes to refuse each bomb, and the operator
   check to refuse a file-reading model.

    .venv/bin/python bench/containment.py [--job default|quick] [--repeats 1] [--threads 2]

Writes bench/results/containment.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from app.infra.artifacts import LocalStore  # noqa: E402
from app.infra.db import Job  # noqa: E402
from app.infra.migrate import upgrade  # noqa: E402
from app.infra.settings import Settings  # noqa: E402
from app.infra.store import JobStore  # noqa: E402
from worker.contained import warm_up  # noqa: E402
from worker.runner import WorkerServices, run_job  # noqa: E402

QUICK = {"dataset": "builtin:digits", "teacher_epochs": 1, "student_epochs": 2,
         "evaluation": {"enabled": False}}  # fmt: skip


def _model(job: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if job == "default":
            from bench.common import baseline, mnist

            path = folder / "teacher.pt"
            torch.jit.save(torch.jit.script(baseline(mnist(), 10)), str(path))
            return path, {"dataset": "builtin:mnist"}
        from tests.core.model_files import write_model

        return write_model("torchscript", folder), dict(QUICK)


def _services(root: Path, contained: bool) -> WorkerServices:
    settings = Settings(
        database_url=f"sqlite:///{root}/harden.db",
        broker_url="memory://",
        artifact_dir=root / "artifacts",
        work_dir=root / "work",
        contain_models=contained,
    )
    upgrade(settings.database_url)
    return WorkerServices(
        settings, JobStore.from_url(settings.database_url), LocalStore(settings.artifact_dir)
    )


def _one_job(root: Path, model: Path, spec: dict[str, Any], contained: bool) -> float:
    services = _services(root, contained)
    job_id = uuid.uuid4().hex
    services.artifacts.put(job_id, "inputs/model", model)
    services.store.create(
        Job(id=job_id, owner="bench", state="queued", progress=0.0, spec=spec,
            model_sha256="-", model_format="torchscript", artifacts={},
            cancel_requested=False, attempts=0)
    )  # fmt: skip
    start = time.perf_counter()
    state = run_job(services, job_id)
    seconds = time.perf_counter() - start
    if state != "succeeded":
        job = services.store.get(job_id)
        raise SystemExit(f"the job ended {state}: {job.error_code} {job.error_message}")
    return seconds


def _overhead(job: str, repeats: int) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model, spec = _model(job, root)
        warm_up()
        times: dict[bool, list[float]] = {False: [], True: []}
        for index in range(repeats):
            for contained in (False, True) if index % 2 == 0 else (True, False):
                seconds = _one_job(root / f"run-{index}-{contained}", model, spec, contained)
                times[contained].append(seconds)
                print(f"{'contained' if contained else 'in-process'}: {seconds:.1f} s", flush=True)
    inside, child = statistics.median(times[False]), statistics.median(times[True])
    return [
        f"## Overhead on the {job} job ({repeats} run(s) each, alternating; median)",
        "",
        "| run | seconds | each run |",
        "| --- | ---: | --- |",
        f"| in-process | {inside:.1f} | {', '.join(f'{t:.1f}' for t in times[False])} |",
        f"| contained | {child:.1f} | {', '.join(f'{t:.1f}' for t in times[True])} |",
        "",
        f"ratio contained/in-process: {child / inside:.3f} ({(child / inside - 1) * 100:+.1f}%)",
        "",
    ]


def _refusals() -> list[str]:
    from app.web.uploads import check_dataset_upload
    from core.errors import HardenError
    from core.intake.sniff import sniff_format
    from tests.core.archive_files import malformed_npz, png_claiming, tar_bomb
    from tests.core.intake.test_operators import ReadsAFile, _script

    rows = ["## Time to refuse", "", "| input | size | CPU s | refused as |"]
    rows.append("| --- | ---: | ---: | --- |")
    cases: dict[str, tuple[bytes, str]] = {
        "tar.bz2, 8 GiB of zeros after the tar": (tar_bomb("bz2", 8 * 2**30), "archive.tar.bz2"),
        "tar.xz, 1 GiB of zeros in an entry": (tar_bomb("xz", 2**30, inside=True), "a.tar.xz"),
        "tar.gz, 256 MiB of zeros after the tar": (tar_bomb("gz", 256 * 2**20), "a.tar.gz"),
    }
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(4):
            archive.writestr(f"train/a/{index}.png", png_claiming(12000, 12000))
    cases["zip, four 12000x12000 PNGs"] = (buffer.getvalue(), "images.zip")
    first_npz = next(iter(malformed_npz().items()))
    cases[f"npz, {first_npz[0]}"] = (first_npz[1], "data.npz")
    with tempfile.TemporaryDirectory() as folder:
        for name, (data, filename) in cases.items():
            path = Path(folder) / filename
            path.write_bytes(data)
            start = time.process_time()
            try:
                check_dataset_upload(path, (0.0, 1.0))
                outcome = "ACCEPTED"
            except HardenError as exc:
                outcome = exc.code
            seconds = time.process_time() - start
            rows.append(f"| {name} | {len(data):,} B | {seconds:.3f} | {outcome} |")
        model = _script(ReadsAFile("/etc/passwd"), Path(folder) / "reads.pt")
        start = time.process_time()
        try:
            sniff_format(model)
            outcome = "ACCEPTED"
        except HardenError as exc:
            outcome = f"{exc.code} ({exc.fields.get('operator')})"
        seconds = time.process_time() - start
        rows.append(f"| TorchScript calling torch.from_file | {model.stat().st_size:,} B | "
                    f"{seconds:.3f} | {outcome} |")  # fmt: skip
    return [*rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", choices=["default", "quick"], default="default")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/containment.md"))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the fork server's children too
    torch.set_num_threads(args.threads)
    lines = [
        "# Containment: its overhead, and the time to refuse hostile inputs",
        "",
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} "
        f"thread(s), no GPU. `python bench/containment.py --job {args.job} --repeats "
        f"{args.repeats}`.",
        "",
        *_refusals(),
        *_overhead(args.job, args.repeats),
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
