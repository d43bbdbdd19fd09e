"""References the service's worker fetches: registered datasets and remote files, as the spec,
the API and the worker parse them (issue 13)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.contract.fetched_refs import (
    RegisteredRef,
    RemoteRef,
    is_fetched_reference,
    parse_fetched_reference,
)
from core.contract.spec import HardenSpec
from core.datasets.references import load_dataset
from core.errors import DatasetError
from core.plan import dataset_reference

SHA = "ab" * 32
DATASET_ID = "0123456789abcdef" * 2


def test_registered_references_name_an_id_or_a_sha256():
    assert parse_fetched_reference(f"dataset:{DATASET_ID}") == RegisteredRef(DATASET_ID, None)
    assert parse_fetched_reference(f"dataset:sha256:{SHA.upper()}") == RegisteredRef(None, SHA)


def test_remote_references_split_into_location_and_pin():
    s3 = parse_fetched_reference(f"s3://bucket/data/set.npz#sha256={SHA}")
    assert s3 == RemoteRef("s3", "s3://bucket/data/set.npz", "bucket", None, "data/set.npz", SHA)
    web = parse_fetched_reference("https://example.org:8443/d.zip")
    assert isinstance(web, RemoteRef)
    assert (web.host, web.port, web.path, web.sha256) == ("example.org", 8443, "/d.zip", None)


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("dataset:42", "32-hex id"),
        ("dataset:sha256:abc", "64 hex"),
        ("s3://bucket", "s3://bucket/key"),
        ("s3://bucket/folder/", "s3://bucket/key"),
        (f"https://h/x#sha256={SHA[:10]}", "not a sha256"),
        ("https://h/x#part", "fragment"),
        ("https://user:pw@h/x", "user:password@"),
        ("https:///nohost", "needs a host"),
        # Dot and empty segments in an S3 key (issue 25): refused, percent-encoded too.
        ("s3://bucket/../../key", "holds '..'"),
        ("s3://bucket/data/../other.npz", "holds '..'"),
        ("s3://bucket/./key.npz", "holds '.'"),
        ("s3://bucket/%2e%2e/key.npz", "holds '%2e%2e'"),
        ("s3://bucket/a//key.npz", "empty segment"),
        ("s3://bucket//key.npz", "empty segment"),
    ],
)
def test_malformed_references_say_the_right_form(ref, says):
    assert is_fetched_reference(ref)
    with pytest.raises(ValueError, match=says):
        parse_fetched_reference(ref)
    with pytest.raises(ValidationError, match=says):
        HardenSpec(dataset=ref)


def test_other_schemes_are_refused_with_the_forms_the_service_takes():
    with pytest.raises(ValidationError) as refused:
        HardenSpec(dataset="ftp://host/d.npz")
    message = str(refused.value)
    assert "'ftp'" in message and "dataset:<id>" in message and "s3://bucket/key" in message
    assert "file://" not in message  # the service refuses file://: no hint towards it
    assert not is_fetched_reference("builtin:mnist") and not is_fetched_reference("/data/x.npz")


def test_a_config_pin_agrees_with_the_reference():
    spec = HardenSpec(dataset="s3://b/k.npz", dataset_sha256=SHA)
    assert spec.dataset_sha256 == SHA
    HardenSpec(dataset=f"s3://b/k.npz#sha256={SHA}", dataset_sha256=SHA)
    with pytest.raises(ValidationError, match="differ"):
        HardenSpec(dataset=f"s3://b/k.npz#sha256={'cd' * 32}", dataset_sha256=SHA)
    with pytest.raises(ValidationError, match="remove dataset_sha256"):
        HardenSpec(dataset="builtin:digits", dataset_sha256=SHA)
    with pytest.raises(ValidationError):
        HardenSpec(dataset="s3://b/k.npz", dataset_sha256="not-hex")


def test_the_run_uses_the_fetched_file_under_the_reference(tmp_path):
    spec = HardenSpec(dataset=f"dataset:{DATASET_ID}")
    fetched = tmp_path / "dataset.npz"
    assert dataset_reference(spec, fetched) == f"dataset:{DATASET_ID}"
    # harden run has no worker to fetch it: one clear refusal, not "no such file".
    with pytest.raises(DatasetError, match="harden run reads local files only"):
        load_dataset("s3://bucket/key.npz")
