"""bench/big_dataset.py's pieces: its archive is a dataset the pipeline splits, and its memory
sampler reads this process's peaks."""

from __future__ import annotations

from pathlib import Path

from bench.big_dataset import CLASSES, SIDE, MemorySampler, make_archive
from core.datasets.references import load_dataset


def test_the_generated_archive_is_split_by_test_fraction(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    make_archive(path, 60)
    data = load_dataset(str(path))
    assert data.num_classes == CLASSES and data.input_shape == (1, SIDE, SIDE)
    assert (len(data.y_train), len(data.y_test), data.split.source) == (48, 12, "test_fraction")


def test_the_sampler_sees_memory_taken_while_it_runs() -> None:
    with MemorySampler(interval_s=0.001) as sampler:
        block = bytearray(64 * 1024**2)
        block[::4096] = b"\1" * len(block[::4096])  # touch every page
    assert (
        sampler.peaks["RssAnon"] >= 64 * 1024 and sampler.peaks["VmHWM"] >= sampler.peaks["VmRSS"]
    )
    del block
