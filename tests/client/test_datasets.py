"""The Python client's registered datasets (issue 13): upload once, list, read, name in a job,
delete; the service's refusals as HardenAPIError."""

from __future__ import annotations

from pathlib import Path

import pytest
from harden_client import HardenAPIError, HardenClient

from tests.app.conftest import digits_like_npz, onnx_model_bytes


@pytest.fixture
def client(api, key):
    with HardenClient("http://testserver", key, transport=api._transport) as harden:
        yield harden


def test_upload_list_reference_and_delete(client, store, tmp_path: Path):
    (tmp_path / "digits.npz").write_bytes(digits_like_npz())
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    dataset = client.upload_dataset(tmp_path / "digits.npz", name="digits", input_range=(0, 1))
    assert dataset["name"] == "digits" and dataset["format"] == "npz"
    assert client.upload_dataset(tmp_path / "digits.npz")["id"] == dataset["id"]
    assert [d["id"] for d in client.list_datasets()["items"]] == [dataset["id"]]
    assert client.dataset(dataset["reference"]) == client.dataset(dataset["id"]) == dataset
    job = client.submit(tmp_path / "m.onnx", dataset=dataset["reference"])
    assert store.get(job["id"]).dataset_id == dataset["id"]
    with pytest.raises(HardenAPIError) as in_use:
        client.delete_dataset(dataset["reference"])
    assert in_use.value.status == 409 and in_use.value.body["job_ids"] == [job["id"]]
    client.cancel(job["id"])
    client.delete_dataset(dataset["reference"])
    with pytest.raises(HardenAPIError) as gone:
        client.dataset(dataset["id"])
    assert gone.value.status == 404 and "GET /datasets" in gone.value.hint


def test_a_refused_upload_is_an_error_with_the_fix(client, tmp_path: Path):
    (tmp_path / "bad.npz").write_bytes(digits_like_npz(drop="x_test"))
    with pytest.raises(HardenAPIError) as refused:
        client.upload_dataset(tmp_path / "bad.npz")
    assert refused.value.code == "invalid_dataset" and "np.savez" in refused.value.hint
    assert client.list_datasets()["total"] == 0
