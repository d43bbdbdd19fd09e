"""A succeeded job's model.onnx as a serving layout zip (GET /jobs/{id}/layout.zip).

The layout is built on demand from the stored model.onnx (core.deploy.serving_layout reads its
graph with onnx; no torch), in a temporary folder the route removes once the zip is sent.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from app.web.deps import Services
from app.web.errors import NotFoundError
from core.deploy.serving_layout import LayoutOptions, layout_zip
from core.names import MODEL_ONNX


def serving_layout_zip(services: Services, job_id: str, options: LayoutOptions) -> Path:
    """The job's layout zip in a new temporary folder (the caller removes the folder)."""
    folder = Path(tempfile.mkdtemp(prefix="harden-layout-"))
    try:
        model = services.artifacts.local_path(job_id, MODEL_ONNX)
        if model is None or not model.exists():
            model = services.artifacts.fetch(job_id, MODEL_ONNX, folder / MODEL_ONNX)
        return layout_zip(model, folder / f"{options.layout}.zip", options)
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)
        raise NotFoundError(
            f"{MODEL_ONNX} of job {job_id} is missing from the artifact store",
            hint="the stored file was removed outside the service: resubmit the job, and tell "
            "the operators",
        ) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
