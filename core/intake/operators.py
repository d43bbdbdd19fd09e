"""Only known operators run: every uploaded model's operators, checked before anything loads it.

Torch-free, so the web API refuses a model at upload (422) and the worker again before loading:

- TorchScript: the archive's ``code/`` files are TorchScript source; every call in them is read
  with :mod:`ast` and must be an allowed ATen operator (``torch.name``), an allowed ``prim``
  operator (``ops.prim.name``), a method the archive defines, or a plain builtin. Other
  namespaces (custom ops), fork/wait/RPC, file and storage operators are refused. The worker
  checks the loaded graphs again with every method inlined (:mod:`core.intake.graph_ops`).
- torch.export: every node target in the archive's graph JSON (higher-order subgraphs included).
- ONNX: default-domain operators only; no model-local functions; no external data on any
  tensor (initializers, sparse initializers, attributes of ``Constant``, ``ConstantOfShape`` or
  any node, subgraphs of ``If``/``Loop``/``Scan``) - onnx reads external data from paths the
  file names, relative to the reader's folder.

The ATen list is derived from torch's schemas (:func:`core.intake.graph_ops.derive_allowed_aten`)
and kept as a snapshot beside this file because the web process has no torch.
"""

from __future__ import annotations

import ast
import builtins
import json
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import UnsafeModelError

SNAPSHOT = Path(__file__).with_name("allowed_aten_ops.txt")

# The TorchScript interpreter's own nodes that only move values, branch, loop or read
# attributes (no I/O, no threads, no other process). Absent on purpose: prim::fork,
# prim::rpc_*, prim::awaitable*, prim::PythonOp, prim::Enter/Exit, profiling and fusion nodes.
ALLOWED_PRIM = frozenset(
    {
        "prim::Constant",
        "prim::If",
        "prim::Loop",
        "prim::GetAttr",
        "prim::SetAttr",
        "prim::CallMethod",
        "prim::CallFunction",
        "prim::ListConstruct",
        "prim::ListUnpack",
        "prim::TupleConstruct",
        "prim::TupleUnpack",
        "prim::TupleIndex",
        "prim::TupleSlice",
        "prim::DictConstruct",
        "prim::DictIndex",
        "prim::RaiseException",
        "prim::Uninitialized",
        "prim::unchecked_cast",
        "prim::unchecked_unwrap_optional",
        "prim::NumToTensor",
        "prim::CreateObject",
        "prim::EnumValue",
        "prim::EnumName",
        "prim::StringIndex",
        "prim::ModuleContainerIndex",
        "prim::isinstance",
        "prim::Print",
        "prim::device",
        "prim::dtype",
        "prim::layout",
        "prim::data",
        "prim::requires_grad",
        "prim::grad",
        "prim::type",
        "prim::name",
        "prim::index",
        "prim::shape",
        "prim::itemsize",
        "prim::nbytes",
        "prim::tolist",
        "prim::min",
        "prim::max",
        "prim::abs",
        "prim::rangelist",
        "prim::is_cpu",
        "prim::is_cuda",
        "prim::is_meta",
        "prim::is_mps",
        "prim::is_nested",
        "prim::is_quantized",
        "prim::is_sparse",
        "prim::is_sparse_csr",
        "prim::is_mkldnn",
        "prim::is_xpu",
    }
)  # fmt: skip
# torch.export's control flow; their subgraphs are checked as nodes of the same archive.
ALLOWED_HIGHER_ORDER = frozenset({"higher_order::cond", "higher_order::while_loop"})
# Names a TorchScript source may call without a module: the compiler's own (annotate,
# unchecked_cast, uninitialized) and Python builtins it implements; never fork or wait.
_SCRIPT_BUILTINS = frozenset({"annotate", "unchecked_cast", "uninitialized"}) | (
    frozenset(dir(builtins))
    - {"open", "exec", "eval", "compile", "__import__", "input", "breakpoint", "globals"}
    - {"locals", "vars", "setattr", "delattr", "memoryview", "exit", "quit", "help"}
)
_ONNX_DEFAULT_DOMAINS = {"", "ai.onnx"}


@lru_cache(maxsize=1)
def allowed_operators() -> frozenset[str]:
    """Every operator kind a model may hold: the ATen snapshot, ALLOWED_PRIM, higher-order ops."""
    lines = SNAPSHOT.read_text(encoding="utf-8").splitlines()
    aten = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return frozenset(aten) | ALLOWED_PRIM | ALLOWED_HIGHER_ORDER


def refused_operator(kind: str, fmt: str) -> UnsafeModelError:
    """The error for a model holding ``kind``, an operator outside the allowlist."""
    return UnsafeModelError(
        f"the {fmt} model uses the operator {kind!r}, which is not on the allowlist of "
        "operators that compute on tensors (file, storage, thread, RPC, process and custom "
        "operators are refused); it was not run",
        hint="export the model's forward computation only: no file access, custom operators, "
        "torch.jit.fork or RPC in forward; the allowlist is core/intake/allowed_aten_ops.txt "
        "(ATen) and core/intake/operators.py (TorchScript prim, higher-order ops, ONNX)",
        format=fmt,
        operator=kind,
    )


def check_operators(path: Path, fmt: str) -> None:
    """Refuse ``path`` (of format ``fmt``) when it holds an operator outside the allowlist."""
    if fmt == "torchscript":
        _check_script_archive(path)
    elif fmt == "torch_export":
        _check_export_archive(path)
    elif fmt == "onnx":
        _check_onnx(path)


# --- TorchScript -------------------------------------------------------------------------------
def _check_script_archive(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        sources = [
            archive.read(name).decode("utf-8", "replace")
            for name in archive.namelist()
            if "/code/" in name and name.endswith(".py")
        ]
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(source))
        except SyntaxError as exc:
            raise UnsafeModelError(
                f"the TorchScript archive holds code that cannot be read: {exc.msg}",
                hint="save the model with torch.jit.save(torch.jit.script(model), path)",
                format="torchscript",
            ) from exc
    defined = {
        node.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    allowed = allowed_operators()
    for tree in trees:
        for kind in _script_calls(tree, defined):
            if kind not in allowed:
                raise refused_operator(kind, "torchscript")


def _script_calls(tree: ast.AST, defined: set[str]) -> Iterator[str]:
    """The operator kind of every call in a TorchScript source (allowed or not)."""
    # The serializer binds functions to locals first (``_0 = __torch__.f``, then ``_0(x)``).
    aliases = {
        target.id: _dotted(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node).startswith("__torch__.torch.classes"):
            yield "torchbind::" + _dotted(node)  # native classes with their own code
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in aliases:
            dotted = aliases[func.id]
        elif isinstance(func, ast.Name):
            if func.id not in _SCRIPT_BUILTINS and func.id not in defined:
                yield f"builtin::{func.id}"
            continue
        elif isinstance(func, ast.Attribute):
            dotted = _dotted(func)
        else:
            yield "call::<expression>"
            continue
        parts = dotted.split(".")
        if parts[0] == "torch" and len(parts) == 2:
            yield f"aten::{parts[1]}"
        elif parts[:2] == ["torch", "ops"] and len(parts) == 4:
            yield f"{parts[2]}::{parts[3]}"
        elif parts[0] == "ops" and len(parts) == 3:
            yield f"{parts[1]}::{parts[2]}"
        elif parts[0] in ("torch", "ops"):
            yield dotted
        elif parts[0] == "__torch__":
            continue  # a class or function of this archive, checked in its own file
        elif parts[-1] not in defined and f"aten::{parts[-1]}" not in allowed_operators():
            # A method call on a value: a tensor, list, str or dict method is the ATen operator
            # of the same name; anything else must be a method the archive defines.
            yield f"aten::{parts[-1]}"


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "<expression>"


# --- torch.export ------------------------------------------------------------------------------
def _check_export_archive(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        graphs = [
            archive.read(name)
            for name in archive.namelist()
            if "/models/" in name and name.endswith(".json")
        ]
    allowed = allowed_operators()
    for raw in graphs:
        try:
            program = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnsafeModelError(
                "the torch.export archive's graph cannot be read",
                hint="save the model with torch.export.save(torch.export.export(model, "
                "(sample,)), path)",
                format="torch_export",
            ) from exc
        for target in _export_targets(program):
            kind = _export_kind(target)
            if kind and kind not in allowed:
                raise refused_operator(kind, "torch_export")


def _export_targets(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        target = value.get("target")
        if isinstance(target, str) and "inputs" in value:
            yield target
        for item in value.values():
            yield from _export_targets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _export_targets(item)


def _export_kind(target: str) -> str:
    """'' for Python's getitem, else the kind as ``namespace::name``."""
    if target in ("_operator.getitem", "operator.getitem"):
        return ""
    parts = target.split(".")
    if parts[:2] == ["torch", "ops"] and len(parts) >= 4:
        return f"{parts[2]}::{parts[3]}"
    return f"python::{target}"


# --- ONNX --------------------------------------------------------------------------------------
def _check_onnx(path: Path) -> None:
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    if len(model.functions):
        raise refused_operator(f"function::{model.functions[0].name}", "onnx")
    schemas = _onnx_default_ops()
    for node in _onnx_nodes(model.graph):
        if node.domain not in _ONNX_DEFAULT_DOMAINS:
            raise refused_operator(f"{node.domain}::{node.op_type}", "onnx")
        if node.op_type not in schemas:
            raise refused_operator(f"ai.onnx::{node.op_type}", "onnx")
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise _external_data(tensor.name)


@lru_cache(maxsize=1)
def _onnx_default_ops() -> frozenset[str]:
    import onnx.defs

    return frozenset(
        schema.name
        for schema in onnx.defs.get_all_schemas_with_history()
        if schema.domain in _ONNX_DEFAULT_DOMAINS
    )


def _onnx_subgraphs(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def _onnx_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for subgraph in _onnx_subgraphs(node):
            yield from _onnx_nodes(subgraph)


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph holds: initializers, sparse ones, node attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices
        for subgraph in _onnx_subgraphs(node):
            yield from _onnx_tensors(subgraph)


def _external_data(name: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"the ONNX model's tensor {name!r} keeps its data in an external file, which is never "
        "read (it would be read from a path the model names)",
        hint="export into one file: torch.onnx.export(..., external_data=False), or "
        "onnx.save_model(model, path, save_as_external_data=False)",
        format="onnx",
    )
