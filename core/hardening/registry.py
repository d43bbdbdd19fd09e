"""The hardening methods a job can run, by name: each catalogue description's torch class
(:mod:`core.contract.methods` names it, ``implementation``), imported here, so the methods are
listed once, in the catalogue."""

from __future__ import annotations

import importlib
from typing import Final

from core.contract.methods import CATALOGUE, DEFAULT_METHOD, MethodInfo
from core.hardening.method import HardeningMethod

__all__ = ["DEFAULT_METHOD", "METHODS"]


def _implementation(info: MethodInfo) -> HardeningMethod:
    module, _, name = info.implementation.partition(":")
    method: HardeningMethod = getattr(importlib.import_module(module), name)()
    if method.info is not info:  # a class naming another description would run the wrong method
        raise ImportError(f"{info.implementation} implements {method.info.name}, not {info.name}")
    return method


METHODS: Final[dict[str, HardeningMethod]] = {
    name: _implementation(info) for name, info in CATALOGUE.items()
}
