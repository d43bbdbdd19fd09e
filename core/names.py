"""The names every part of the service agrees on, defined once: artifact files, builtin datasets,
the arrays of a ``.npz`` dataset and the progress/cancel callback types.

Torch-free, so the web process, the workers, the CLI and the core all read them from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Literal

# The files a succeeded job produces, in the order they are written and listed.
MODEL_ONNX: Final = "model.onnx"
REPORT_JSON: Final = "report.json"
REPORT_HTML: Final = "report.html"
REPORT_SARIF: Final = "report.sarif"  # the findings as SARIF 2.1.0 (core/report/sarif.py)
MODEL_CARD: Final = "MODEL_CARD.md"  # a Hugging Face model card (core/report/model_card.py)
ARTIFACT_NAMES: Final = (MODEL_ONNX, REPORT_JSON, REPORT_HTML, REPORT_SARIF, MODEL_CARD)

# A checkpoint of a job's training (core/checkpoint.py): the only names the job's process may
# hand the worker to store.
CHECKPOINT_NAME: Final = re.compile(r"^train-[0-9]{2,4}-[a-z_]{1,32}\.safetensors$")

BUILTIN_DATASETS: Final = ("builtin:mnist", "builtin:digits")

# The arrays an uploaded .npz dataset must hold.
NPZ_ARRAYS: Final = ("x_train", "y_train", "x_test", "y_test")

# The audit's verdict on a hardened model (core.audit.verdict.decide).
VerdictLabel = Literal["masked", "no measurable gain", "real gain"]

# on_progress(stage, done, total): called by long core functions; the worker wires it to the job
# store, the CLI to a progress bar.
ProgressFn = Callable[[str, int, int], None]
# should_cancel(): polled at least once per training or attack step.
CancelFn = Callable[[], bool]
