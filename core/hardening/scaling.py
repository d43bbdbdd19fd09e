"""Scaling a classifier's logits by T: its last linear layer when one can be proven, else a wrapper.

Used by :mod:`core.hardening.distillation` to start the teacher at temperature T from an upload
trained at T=1.
Loaded models come in several shapes (plain modules, TorchScript, ``torch.export`` graphs,
onnx2torch graphs), so the last linear layer is found per shape and the result is always checked
on a sample: after scaling, the logits must be T times the original ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, fx, nn

# aten/functional ops computing ``x @ W.T + b``; addmm is ``b + x @ W.T`` with W.T passed in.
_LINEAR_TARGETS = {torch.ops.aten.linear.default, torch.nn.functional.linear}
_ADDMM_TARGETS = {torch.ops.aten.addmm.default, torch.addmm}
_TRANSPOSE_TARGETS = {
    torch.ops.aten.t.default,
    torch.ops.aten.permute.default,
    torch.ops.aten.transpose.int,
}


class OutputScale(nn.Module):
    """``module(x) * factor``: the fallback when no last linear layer can be proven."""

    def __init__(self, module: nn.Module, factor: float) -> None:
        super().__init__()
        self.module = module
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x) * self.factor


Candidate = tuple[str, nn.Parameter, nn.Parameter | None]


def _is_linear(module: nn.Module) -> bool:
    # onnx2torch turns Gemm into nn.Linear; TorchScript keeps the Python class name.
    return isinstance(module, nn.Linear) or getattr(module, "original_name", None) == "Linear"


def _linear_params(module: nn.Module) -> tuple[nn.Parameter, nn.Parameter | None] | None:
    # named_parameters, not getattr: a TorchScript submodule's attributes are plain tensors.
    own = dict(module.named_parameters(recurse=False))
    weight, bias = own.get("weight"), own.get("bias")
    if weight is None or weight.dim() != 2:
        return None
    return weight, bias


def _fx_candidates(graph_module: fx.GraphModule) -> Iterator[Candidate]:
    """The linear op whose result is the graph's output (torch.export and onnx2torch graphs)."""
    output = next((n for n in graph_module.graph.nodes if n.op == "output"), None)
    if output is None:
        return
    result = output.args[0]
    while isinstance(result, tuple | list) and len(result) == 1:
        result = result[0]
    if not isinstance(result, fx.Node):
        return
    params = dict(graph_module.named_parameters())

    def param_of(node: object) -> tuple[str, nn.Parameter] | None:
        while isinstance(node, fx.Node) and node.op == "call_function":
            if node.target not in _TRANSPOSE_TARGETS:
                return None
            node = node.args[0]
        if isinstance(node, fx.Node) and node.op == "get_attr" and node.target in params:
            return str(node.target), params[str(node.target)]
        return None

    if result.op == "call_module":
        sub = graph_module.get_submodule(str(result.target))
        found = _linear_params(sub) if _is_linear(sub) else None
        if found:
            yield f"{result.target} (graph output)", found[0], found[1]
    elif result.op == "call_function" and result.target in _LINEAR_TARGETS:
        weight = param_of(result.args[1])
        bias = param_of(result.args[2]) if len(result.args) > 2 else None
        if weight:
            yield f"{weight[0]} (graph output)", weight[1], bias[1] if bias else None
    elif result.op == "call_function" and result.target in _ADDMM_TARGETS:
        bias, weight = param_of(result.args[0]), param_of(result.args[2])
        if weight:
            yield f"{weight[0]} (graph output)", weight[1], bias[1] if bias else None


def _candidates(module: nn.Module) -> Iterator[Candidate]:
    """Likely last linear layers, most certain first; each is verified by the caller."""
    if isinstance(module, fx.GraphModule):
        yield from _fx_candidates(module)
    linears = [(name, sub) for name, sub in module.named_modules() if _is_linear(sub)]
    if linears:
        name, sub = linears[-1]
        found = _linear_params(sub)
        if found:
            yield f"{name or 'model'} (last Linear module)", found[0], found[1]
    # Last resort: the last 2-D weight in registration order and the 1-D bias registered after it.
    named = list(module.named_parameters())
    for index in range(len(named) - 1, -1, -1):
        name, weight = named[index]
        if weight.dim() == 2:
            follower = named[index + 1][1] if index + 1 < len(named) else None
            bias = follower if follower is not None and follower.shape == weight.shape[:1] else None
            yield f"{name} (last 2-D parameter)", weight, bias
            return


def _multiply(weight: Tensor, bias: Tensor | None, factor: float) -> None:
    with torch.no_grad():
        weight.mul_(factor)
        if bias is not None:
            bias.mul_(factor)


def scale_last_linear(
    module: nn.Module, temperature: float, *, sample: Tensor | None = None
) -> str:
    """Multiply ``module``'s last linear layer's weight and bias by ``temperature``, in place.

    Returns what was scaled, for the report. With ``sample`` (inputs as the module expects them)
    every candidate is checked: the scaled logits must equal ``temperature`` times the original
    ones, else the candidate is undone and the next tried. Raises ``ValueError`` when none passes
    (the caller then wraps the model with :class:`OutputScale`).
    """
    reference = None
    if sample is not None:
        with torch.no_grad():
            reference = module(sample).float()
    seen: set[int] = set()
    for description, weight, bias in _candidates(module):
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        # Kept to restore exactly: dividing by T again would not give the same floats back.
        saved = [t.detach().clone() for t in (weight, bias) if t is not None]
        _multiply(weight, bias, temperature)
        if reference is None:
            return description
        with torch.no_grad():
            scaled = module(sample).float()
        expected = reference * temperature
        tolerance = 1e-5 * float(expected.abs().max()) + 1e-6
        if torch.allclose(scaled, expected, rtol=1e-4, atol=tolerance):
            return description
        with torch.no_grad():
            for tensor, original in zip((weight, bias), saved, strict=False):
                tensor.copy_(original)  # type: ignore[union-attr]
    raise ValueError("no linear layer whose scaling multiplies the logits by T was found")
