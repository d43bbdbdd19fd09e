"""POST /harden takes the dataset forms harden run takes: an archive of class folders without a
split and an .npz with only x and y are accepted (the worker splits them by test_fraction);
those that cannot be split are refused at upload, naming the fix."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from tests.app.conftest import files_under, npz_bytes, onnx_model_bytes
from tests.app.web.test_submit import assert_nothing_left, assert_problem, post


def _class_folders_zip(per_class: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in range(10):
            for index in range(per_class):
                archive.writestr(f"digits/{label}/{index}.png", b"\x89PNG not decoded here")
    return buffer.getvalue()


def _xy(labels: np.ndarray) -> bytes:
    rng = np.random.default_rng(0)
    return npz_bytes(x=rng.random((len(labels), 1, 8, 8), dtype=np.float32), y=labels)


def test_an_archive_of_class_folders_without_a_split_is_accepted(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), dataset=_class_folders_zip(3))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["spec"]["dataset"] == "upload" and job["spec"]["test_fraction"] == 0.2
    assert store.get(job["id"]).dataset_name == "dataset.zip"


def test_an_npz_with_only_x_and_y_is_accepted(api, auth, settings):
    response = post(api, auth, onnx_model_bytes(), dataset=_xy(np.repeat(np.arange(10), 3)))
    assert response.status_code == 202, response.text
    names = sorted(p.name for p in files_under(settings.artifact_dir / response.json()["id"]))
    assert names == ["dataset.npz", "model"]


def test_datasets_too_small_to_split_are_refused_at_upload(api, auth, store, settings):
    labels = np.append(np.repeat(np.arange(9), 3), 9)  # class 9 has one image
    body = assert_problem(post(api, auth, onnx_model_bytes(), dataset=_xy(labels)), 422,
                          "invalid_dataset")  # fmt: skip
    assert "[9]" in body["detail"] and "x=images, y=labels" in body["hint"]
    body = assert_problem(
        post(api, auth, onnx_model_bytes(), dataset=_class_folders_zip(1)), 422, "invalid_dataset"
    )
    assert "fewer than 2 images" in body["detail"]
    assert_nothing_left(store, settings)


def test_a_bad_test_fraction_is_refused(api, auth, store, settings):
    config = {"dataset": "builtin:digits", "test_fraction": 0.95}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config), 422, "invalid_spec")
    assert "test_fraction" in body["detail"]
    assert_nothing_left(store, settings)
