"""Loading uploaded models (TorchScript, torch.export, ONNX, safetensors + zoo) and the zoo."""

from __future__ import annotations

from core.zoo import ZOO, build_zoo_model

__all__ = ["ZOO", "build_zoo_model"]
