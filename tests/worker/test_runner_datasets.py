"""The worker runs the dataset forms the service accepts at upload (the issue's table: an archive
of class folders without a split was accepted, then failed in the worker): the real
core.pipeline.run splits it by test_fraction and the stored report says so."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from core.report.schema import Report
from tests.worker.conftest import queue_job
from worker.runner import WorkerServices, run_job


def _digits_zip(per_class: int) -> bytes:
    digits = load_digits()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in range(10):
            for index, image in enumerate(digits.images[digits.target == label][:per_class]):
                png = io.BytesIO()
                Image.fromarray((image * 255 / 16).astype(np.uint8)).save(png, format="PNG")
                archive.writestr(f"digits/{label}/{index}.png", png.getvalue())
    return buffer.getvalue()


def test_an_archive_without_a_split_is_split_by_test_fraction(services: WorkerServices, tmp_path):
    spec = {"dataset": "upload", "test_fraction": 0.25, "seed": 4}
    job_id = queue_job(services, spec, dataset_name="dataset.zip")
    (tmp_path / "dataset").write_bytes(_digits_zip(per_class=4))
    services.artifacts.put(job_id, "inputs/dataset.zip", tmp_path / "dataset")
    assert run_job(services, job_id) == "succeeded", services.store.get(job_id).error
    path = services.artifacts.local_path(job_id, "report.json")
    report = Report.model_validate(json.loads(path.read_text(encoding="utf-8")))
    split = report.dataset_split
    assert split is not None and (split.source, split.test_fraction, split.seed) == (
        "test_fraction", 0.25, 4,
    )  # fmt: skip
    assert (split.train_samples, split.test_samples) == (30, 10)
    assert report.input["dataset"]["class_names"] == [str(d) for d in range(10)]
