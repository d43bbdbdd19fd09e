"""core.datasets.npz_file: a malformed .npy header inside an .npz is a DatasetError naming the
array, however numpy's parser fails on it (issue 25: a truncated header was a 500)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from core.datasets.npz_file import read_npz
from core.datasets.npz_upload import check_npz_upload
from core.errors import DatasetError
from tests.core.archive_files import malformed_npz

MALFORMED = malformed_npz()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_npy_header_is_refused_as_a_dataset_error(case: str, tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(MALFORMED[case])
    # The worker's reader...
    with pytest.raises(DatasetError) as refused:
        read_npz("upload", path, (0.0, 1.0), test_fraction=0.5, seed=0)
    assert re.search(r"\bx\b", refused.value.message), refused.value.message
    assert refused.value.hint and refused.value.fields["reference"] == "upload"
    # ...and the API's upload check refuse it alike.
    with zipfile.ZipFile(path) as archive, pytest.raises(DatasetError) as at_upload:
        check_npz_upload(archive, (0.0, 1.0))
    assert at_upload.value.hint
