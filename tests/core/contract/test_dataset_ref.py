"""The dataset reference parsed in one place: each form to its type, malformed ones refused with
the form to use, and one wording for 'upload' without a file wherever it is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.contract.dataset_ref import (
    BuiltinRef,
    LocalRef,
    UploadRef,
    missing_upload,
    parse_dataset_ref,
)
from core.contract.fetched_refs import RegisteredRef, RemoteRef
from core.contract.spec import HardenSpec
from core.datasets.references import load_dataset
from core.errors import DatasetError
from core.plan import dataset_reference


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("builtin:digits", BuiltinRef),
        ("upload", UploadRef),
        ("dataset:" + "a" * 32, RegisteredRef),
        ("dataset:sha256:" + "b" * 64, RegisteredRef),
        ("s3://bucket/data/train.npz", RemoteRef),
        ("https://example.org/d.npz#sha256=" + "c" * 64, RemoteRef),
        ("data/train.npz", LocalRef),
        ("file:///tmp/train.npz", LocalRef),
        ("C:/data/train.npz", LocalRef),
        ("hf://mnist", LocalRef),  # refused with its export fix where paths are opened
    ],
)
def test_each_form_parses_to_its_type(ref, kind):
    assert isinstance(parse_dataset_ref(ref), kind)


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("builtin:cifar10", "unknown builtin"),
        ("dataset:nothex", "dataset:<id>"),
        ("s3://bucket/../../key", "s3://"),
        ("ftp://host/d.npz", "not supported"),
        ("file://otherhost/d.npz", "three slashes"),
    ],
)
def test_malformed_references_say_the_form_to_use(ref, says):
    with pytest.raises(DatasetError) as caught:
        parse_dataset_ref(ref)
    assert says in f"{caught.value.message} {caught.value.hint}" and caught.value.hint
    with pytest.raises(ValueError, match="dataset"):  # the spec refuses it the same way
        HardenSpec(dataset=ref)


def test_upload_without_a_file_reads_the_same_everywhere(tmp_path: Path):
    expected = missing_upload().message
    with pytest.raises(DatasetError) as planned:
        dataset_reference(HardenSpec(dataset="upload"), None)
    with pytest.raises(DatasetError) as loaded:
        load_dataset("upload")
    assert planned.value.message == loaded.value.message == expected
    assert "dataset=@" in planned.value.hint
