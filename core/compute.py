"""How a run uses its device: training precision, memory layout, cuDNN autotuning (torch-free).

Each choice only speeds up a CUDA GPU and none of them changes anything on the CPU unless asked
for, so CPU runs stay bit-for-bit what they were. ``bench/gpu.py`` measures each on and off on a
GPU; keep the defaults only where that shows they pay.

- ``training_precision``: bfloat16 autocast of the training steps (forward and loss; the backward
  follows). bfloat16 has float32's range, so no loss scaling is needed, unlike float16. Soft
  labels, the held-out check, every attack of the audit and the ONNX export stay float32: an
  attack's success and a deployed model's logits are not decided at 8 bits of mantissa.
- ``channels_last``: convolutional networks train with NHWC tensors, the layout Tensor Cores
  read without a transpose.
- ``cudnn_benchmark``: cuDNN times its convolution algorithms once per input shape and keeps the
  fastest; a job's shapes are fixed, so the timing is paid once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class Compute:
    """What a run does with its device, resolved once (:meth:`resolve`)."""

    training_precision: Literal["float32", "bfloat16"] = "float32"
    channels_last: bool = False
    cudnn_benchmark: bool = False

    @classmethod
    def resolve(
        cls,
        device: str,
        *,
        precision: Precision = "auto",
        channels_last: bool = True,
        cudnn_benchmark: bool = True,
        bfloat16_supported: bool = False,
    ) -> Compute:
        """The choices for ``device`` ('cpu', 'cuda:0'): 'auto' precision is bfloat16 on a CUDA
        GPU that supports it at full speed (``bfloat16_supported``), float32 elsewhere;
        'bfloat16' is honoured anywhere (on the CPU it is slow: for tests and CPUs with AMX).
        The layout and cuDNN choices apply on CUDA only."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        cuda = device.startswith("cuda")
        chosen: Literal["float32", "bfloat16"] = "float32"
        if precision == "bfloat16" or (precision == "auto" and cuda and bfloat16_supported):
            chosen = "bfloat16"
        return cls(
            training_precision=chosen,
            channels_last=cuda and channels_last,
            cudnn_benchmark=cuda and cudnn_benchmark,
        )
