"""The torch-free half of a baseline (core.audit.baseline): the worker resolves one and stores
its cache entries without importing torch.

A cache entry is one baseline's per-sample outcomes under a key of everything they depend on.
The confined child writes a new one into its job's output folder as ``CACHE_ENTRY``; the worker
validates it and moves it into the cache folder under its key (worker/runner.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from core.report.comparison import PerSampleOutcomes


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline: its file (not yet trusted), what it is in words, and the cache."""

    model_file: Path
    label: str
    cache_dir: Path | None = None


# The name of a freshly computed cache entry in the job's output folder.
CACHE_ENTRY = "baseline-audit.json"


def cache_entry_document(key: str, outcomes: PerSampleOutcomes) -> str:
    """The text of a new entry: its key and the outcomes."""
    return json.dumps({"key": key, "outcomes": outcomes.model_dump()})


def read_cached(cache_dir: Path | None, key: str) -> PerSampleOutcomes | None:
    """The cached outcomes under ``key``, or None (none yet, or unreadable: attack again)."""
    if cache_dir is None:
        return None
    try:
        return PerSampleOutcomes.model_validate_json((cache_dir / f"{key}.json").read_bytes())
    except (OSError, ValidationError):
        return None


def store_cache_entry(entry: Path, cache_dir: Path) -> Path | None:
    """Move a cache entry the pipeline wrote (``CACHE_ENTRY``) into ``cache_dir`` under its key,
    validated first: it was written by the confined child, so it is read as untrusted (its
    outcomes are only ever compared again by jobs that could have written the same lie: the
    caller keeps one cache folder per API key). None when the entry is not one."""
    try:
        document = json.loads(entry.read_bytes())
        key = str(document["key"])
        outcomes = PerSampleOutcomes.model_validate(document["outcomes"])
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{key}.json"
    partial = cache_dir / f".{key}.partial"
    partial.write_text(outcomes.model_dump_json())
    partial.replace(target)
    return target
