"""An image-folder zip read straight from the archive, without unpacking it.

A zip's central directory gives every entry's name, size and kind up front and each entry can be
read on its own, so the images are decoded from the archive into the memory-mapped arrays of
:mod:`core.datasets.image_folder`: no file is written per image. Unpacking 200,000 small images
and deleting them again cost minutes on the measured machine, more than decoding them
(bench/results/big_dataset.md). Tar archives, whose entries can only be reached in order
through the whole compressed stream, are still unpacked first (:mod:`core.datasets.archives`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from core.datasets.archives import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    UNREADABLE,
    check_archive_listing,
    check_zip_entry,
)
from core.datasets.checks import CheckedArrays
from core.datasets.image_folder import read_images
from core.datasets.split import SplitRecord
from core.errors import DatasetError


def read_zip_images(
    path: Path,
    input_range: tuple[float, float],
    *,
    test_fraction: float,
    seed: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> tuple[CheckedArrays, SplitRecord]:
    """The images of the image-folder zip at ``path``, as
    :func:`core.datasets.image_folder.read_image_folder` reads a folder. The listing is checked
    first (:func:`core.datasets.archives.check_archive_listing`: entries outside the archive,
    links, the size and count budget, the layout); every entry read must then hold exactly the
    bytes its header declares, so the budget holds however the sizes lie."""
    layout = check_archive_listing(path, max_bytes=max_bytes, max_files=max_files)
    assert layout is not None
    with zipfile.ZipFile(path) as archive:
        entries = {check_zip_entry(i): i for i in archive.infolist() if not i.is_dir()}

        def read(relative: PurePosixPath) -> bytes:
            info = entries[relative]
            try:
                with archive.open(info) as source:
                    data = source.read(info.file_size + 1)
            except (*UNREADABLE, zipfile.BadZipFile) as exc:
                raise DatasetError(
                    f"the archive entry {info.filename!r} cannot be read (damaged?): {exc}",
                    hint="re-create the archive and upload it again in full",
                ) from exc
            if len(data) != info.file_size:
                raise DatasetError(
                    f"the archive entry {info.filename!r} holds {len(data)} or more bytes but "
                    f"its header says {info.file_size}",
                    hint="the archive was altered or damaged: re-create it",
                )
            return data

        return read_images(layout, read, input_range, test_fraction=test_fraction, seed=seed)
