"""What every part of core does to a torch module: set its training mode (exported graphs
included) and take its logits in batches. Shared by the hardening methods, the audit, the export
and the pipeline, so none of them imports another for it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# How many inputs one inference pass takes (soft labels, accuracy): big enough to keep a GPU busy.
INFERENCE_BATCH = 1024


def set_training_mode(module: nn.Module, training: bool) -> None:
    """``module.train(training)``, tolerating torch.export graphs.

    A GraphModule from ``torch.export`` refuses ``train()``/``eval()``; its dropout and batch-norm
    behaviour was fixed when it was exported, so leaving its mode alone is the only choice.
    """
    try:
        module.train(training)
    except NotImplementedError:
        for child in module.modules():
            # Plain children (a Normalize, an OutputScale) still get the mode; only the exported
            # graph itself keeps the one it was exported with.
            if child is not module and not hasattr(child, "graph"):
                child.training = training


@torch.no_grad()
def logits_of(module: nn.Module, inputs: Tensor, *, batch_size: int = INFERENCE_BATCH) -> Tensor:
    """``module``'s logits for ``inputs`` in eval mode, batched, on the inputs' device."""
    set_training_mode(module, False)
    return torch.cat(
        [module(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    )
