"""The operator allowlist derived from torch's own schemas, and its check on loaded graphs.

:mod:`core.intake.operators` checks a model file's operators without torch (the web process has
none) against a snapshot of the allowlist this module derives; the worker checks the loaded
graphs here again, after loading and before any forward, with every method inlined. The snapshot
is written by ``python -m core.intake.graph_ops`` and compared with the derivation by a test.

Hand-written because no library states which TorchScript/ATen operators are safe to run from an
untrusted file: torch's registry knows every operator's schema, not its effects.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import fx, nn

from core.intake.operators import SNAPSHOT, allowed_operators, refused_operator

# An operator computes on tensors when none of its overloads takes or returns a handle on
# something outside the tensors: storages (aten::set_ with a Storage maps memory), RPC
# references and futures (other processes), streams, TorchBind classes (native code with
# state), or a file name (aten::from_file, aten::save).
_OUTSIDE_TYPES = re.compile(r"Storage|RRef|Future|Await|Stream|__torch__|Capsule|AnyClassType")
_FILE_ARGUMENTS = {"filename", "file", "path", "f"}


def derive_allowed_aten() -> set[str]:
    """The ATen operators (``aten::name``) whose every overload computes on tensors only."""
    refused: set[str] = set()
    names: set[str] = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        names.add(schema.name)
        for value in [*schema.arguments, *schema.returns]:
            kind = str(value.type)
            if _OUTSIDE_TYPES.search(kind) or (
                value.name in _FILE_ARGUMENTS and "str" in kind and "[" not in kind
            ):
                refused.add(schema.name)
    return names - refused


def write_snapshot(path: Path = SNAPSHOT) -> int:
    """Write the derived ATen allowlist (one name a line, sorted); returns its length."""
    names = sorted(derive_allowed_aten())
    header = (
        f"# ATen operators an uploaded model may run, derived from torch {torch.__version__}'s "
        "schemas by core/intake/graph_ops.py (python -m core.intake.graph_ops)\n"
    )
    path.write_text(header + "\n".join(names) + "\n", encoding="utf-8")
    return len(names)


def check_loaded_model(module: nn.Module, fmt: str) -> None:
    """Refuse a loaded TorchScript or torch.export module that holds an operator outside the
    allowlist (UnsafeModelError naming it). Runs before any forward pass."""
    kinds = _script_kinds(module) if fmt == "torchscript" else _export_kinds(module)
    allowed = allowed_operators()
    for kind in kinds:
        if kind not in allowed:
            raise refused_operator(kind, fmt)


def _script_kinds(module: nn.Module) -> Iterator[str]:
    # Every method of every submodule, with the functions and methods it calls inlined, so an
    # operator cannot hide behind a call.
    for sub in module.modules():
        script = getattr(sub, "_c", None)
        if script is None:
            continue
        for name in script._method_names():
            graph = script._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            yield from _graph_kinds(graph.nodes())


def _graph_kinds(nodes: object) -> Iterator[str]:
    for node in nodes:  # type: ignore[attr-defined]
        yield node.kind()
        for block in node.blocks():
            yield from _graph_kinds(block.nodes())


def _export_kinds(module: nn.Module) -> Iterator[str]:
    for sub in module.modules():
        if not isinstance(sub, fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            if node.op != "call_function":
                if node.op == "call_method":  # an exported graph has none; a crafted one may
                    yield f"method::{node.target}"
                continue
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                yield target._schema.name
            elif isinstance(target, torch._ops.HigherOrderOperator):
                yield f"higher_order::{target.name()}"
            elif target is operator.getitem:
                continue
            else:
                yield f"python::{getattr(target, '__module__', '?')}.{_name(target)}"


def _name(target: object) -> str:
    return str(getattr(target, "__qualname__", getattr(target, "__name__", target)))


if __name__ == "__main__":  # pragma: no cover - the snapshot's writer
    count = write_snapshot()
    print(f"wrote {count} ATen operators to {SNAPSHOT}", file=sys.stderr)
