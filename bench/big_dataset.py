"""Peak memory of a hardening run against the dataset's size (issue 13, big datasets).

Generates image-folder archives of N small grayscale PNGs (28x28, 10 class folders, no split:
the run splits them by test_fraction) and runs the whole pipeline on each, as a worker does
(core.pipeline.run: load, 1 student epoch of defensive distillation on a small MLP upload, ONNX
export, a small audit), each in a fresh process whose memory is sampled every 20 ms from
/proc/self/status. RssAnon is the process's own memory (what cannot be dropped); RssFile the
pages of files it maps (the memory-mapped images: the kernel writes them back and drops them
under pressure); VmHWM the peak of both. As a reference, the same images as an .npz with x and y
(read whole, as one array) at the smaller sizes.

    python -m bench.big_dataset --sizes 25000,100000,200000 --npz-sizes 25000,100000

It writes the table of bench/results/big_dataset.md; the findings under it are written by hand.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

SIDE = 28
CLASSES = 10
DISTINCT = 1000  # distinct PNGs, reused: content does not change what is measured
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def _pngs() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(DISTINCT):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def make_archive(path: Path, count: int) -> None:
    """A zip of ``count`` PNGs in CLASSES class folders (stored: PNGs are compressed already)."""
    pngs = _pngs()
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"images/{index % CLASSES}/{index}.png", pngs[index % DISTINCT])
    partial.rename(path)


def make_npz(path: Path, count: int) -> None:
    from PIL import Image

    pngs = [np.asarray(Image.open(io.BytesIO(b))) for b in _pngs()]
    x = np.stack([pngs[i % DISTINCT] for i in range(count)])
    np.savez(path, x=x, y=np.arange(count) % CLASSES)


def make_model(path: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(SIDE * SIDE, 64), nn.ReLU(), nn.Linear(64, CLASSES)
    )
    torch.jit.save(torch.jit.script(model.eval()), str(path))


class MemorySampler:
    """Peaks of this process's memory fields (kB) in /proc/self/status, sampled in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.peaks = dict.fromkeys(MEMORY_FIELDS, 0)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in MEMORY_FIELDS:
                values[name] = int(rest.split()[0])
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, value in self.read().items():
                self.peaks[name] = max(self.peaks[name], value)
            time.sleep(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, value in self.read().items():
            self.peaks[name] = max(self.peaks[name], value)


def child(dataset: Path, model: Path, out: Path) -> dict[str, object]:
    """One pipeline run on ``dataset``, measured (runs in its own process)."""
    import torch

    from core.contract.spec import HardenSpec
    from core.pipeline import run

    torch.set_num_threads(1)
    spec = HardenSpec(
        dataset="upload", teacher_epochs=0, student_epochs=1, batch_size=256, seed=0,
        evaluation={"samples": 20, "samples_slow": 20, "attacks": ["fgsm_ce", "pgd_linf_ce"]},
    )  # fmt: skip
    before = MemorySampler.read()
    started = time.perf_counter()
    with MemorySampler() as sampler:
        result = run(spec, model, dataset, out, device="cpu")
    split = result.report.dataset_split
    assert split is not None
    return {
        "before_kb": before,
        "peak_kb": sampler.peaks,
        "seconds": time.perf_counter() - started,
        "timings": result.report.timings_s,
        "train": split.train_samples,
        "test": split.test_samples,
    }


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores (shared with other work), {memory_kb / 1024**2:.0f} GiB "
        f"RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def _measure(dataset: Path, model: Path, work: Path) -> dict[str, object]:
    out = work / f"out-{dataset.stem}"
    command = [sys.executable, "-m", "bench.big_dataset", "--child", str(dataset), str(model),
               str(out)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the run on {dataset} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(kb: object) -> str:
    return f"{int(kb) / 1024:.0f}"  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="25000,100000,200000")
    parser.add_argument("--npz-sizes", default="25000,100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/harden_big_dataset"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/big_dataset.md"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dataset, model, out = (Path(p) for p in args.child)
        print(json.dumps(child(dataset, model, out)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.work / "mlp.pt"
    if not model.exists():
        make_model(model)
    rows = []
    load_before = os.getloadavg()[0]
    runs = [("archive", int(n)) for n in args.sizes.split(",")]
    runs += [("npz", int(n)) for n in args.npz_sizes.split(",") if n]
    for form, count in runs:
        dataset = args.work / f"{form}-{count}.{'zip' if form == 'archive' else 'npz'}"
        if not dataset.exists():
            (make_archive if form == "archive" else make_npz)(dataset, count)
        print(f"{form} {count}: measuring", file=sys.stderr, flush=True)
        measured = _measure(dataset, model, args.work)
        print(f"{form} {count}: {measured}", file=sys.stderr, flush=True)
        rows.append((form, count, dataset.stat().st_size, measured))
    lines = [
        "# Peak memory against dataset size (bench/big_dataset.py)",
        "",
        f"Machine: {_machine()}. One process per run, 1 torch thread, CPU. 1-minute load "
        f"average {load_before:.1f} before the runs and {os.getloadavg()[0]:.1f} after them "
        "(other work shared the cores: the seconds are noisy, the memory is not).",
        "",
        "Each run is `core.pipeline.run` as a worker calls it: N 28x28 grayscale PNGs in 10 "
        "class folders without a split (test_fraction 0.2, so 0.8 N train images), a small "
        "MLP upload (TorchScript), 0 teacher epochs, 1 student epoch at batch 256, ONNX export, "
        "an audit of 20 samples (FGSM, PGD L-inf). `float32 tensor` is the size the images "
        "would take as one in-memory tensor. Memory in MiB, sampled every 20 ms from "
        "/proc/self/status: RssAnon is the process's own memory, RssFile the mapped file pages "
        "(the memory-mapped images, which the kernel drops under memory pressure), VmHWM the "
        "peak resident set of both. `before` is the process after its imports.",
        "",
        "| form | N | file MiB | float32 tensor MiB | RssAnon before | peak RssAnon | "
        "RssFile before | peak RssFile | peak VmHWM | load s | total s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for form, count, size, measured in rows:
        before, peak = measured["before_kb"], measured["peak_kb"]
        timings = measured["timings"]
        tensor_mib = count * SIDE * SIDE * 4 / 1024**2
        lines.append(
            f"| {form} | {count:,} | {size / 1024**2:.0f} | {tensor_mib:.0f} | "
            f"{_mib(before['RssAnon'])} | {_mib(peak['RssAnon'])} | {_mib(before['RssFile'])} | "
            f"{_mib(peak['RssFile'])} | "
            f"{_mib(peak['VmHWM'])} | {timings['load']:.0f} | {measured['seconds']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
