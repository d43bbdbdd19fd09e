"""Reading an image-folder dataset (a local directory or an unpacked archive) into arrays that
live on disk, not in memory.

The images are decoded one at a time into a float32 array memory-mapped from a scratch file:
a dataset larger than memory is read in pages as training draws its batches, and the kernel can
drop those pages again (they are file-backed, not the process's own memory). The scratch file is
unlinked as soon as it is mapped, so it disappears with the arrays whatever ends the process.
bench/big_dataset.py measures peak memory against the dataset's size.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from core.datasets.checks import CheckedArrays, check_classes
from core.datasets.layout import ImageFolderLayout, image_folder_layout
from core.datasets.pixels import PixelBudget, bomb_refusal
from core.datasets.split import SplitRecord, stratified_split
from core.errors import DatasetError

# An image's bytes by its path relative to the dataset's root.
ImageReader = Callable[[PurePosixPath], bytes]


def folder_layout(root: Path) -> ImageFolderLayout:
    """The layout of the tree under ``root`` (:mod:`core.datasets.layout`)."""
    dirs: list[PurePosixPath] = []
    files: list[PurePosixPath] = []
    # os.walk, not Path.rglob: it learns each entry's kind from the directory listing instead of
    # one stat per path (a third of the load time with 25,000 images).
    for folder, dir_names, file_names in os.walk(root):
        relative = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs.extend(relative / name for name in dir_names)
        files.extend(relative / name for name in file_names)
    return image_folder_layout(dirs, files)


def read_image_folder(
    root: Path,
    input_range: tuple[float, float],
    *,
    test_fraction: float,
    seed: int,
    scratch_dir: Path | None = None,
) -> tuple[CheckedArrays, SplitRecord]:
    """The images under ``root`` as float32 NCHW arrays in ``input_range`` (uint8 0..255 scaled
    to it), memory-mapped from a scratch file in ``scratch_dir`` (default: the temp folder), and
    class-index labels. Without a test split of its own the dataset is split by
    ``test_fraction``, stratified, seeded with ``seed``."""

    def read(relative: PurePosixPath) -> bytes:
        return root.joinpath(*relative.parts).read_bytes()

    return read_images(
        folder_layout(root), read, input_range, test_fraction=test_fraction, seed=seed,
        scratch_dir=scratch_dir,
    )  # fmt: skip


def read_images(
    layout: ImageFolderLayout,
    read: ImageReader,
    input_range: tuple[float, float],
    *,
    test_fraction: float,
    seed: int,
    scratch_dir: Path | None = None,
) -> tuple[CheckedArrays, SplitRecord]:
    """:func:`read_image_folder` for images laid out as ``layout`` whose bytes ``read`` gives
    (from a folder, or straight from a zip archive: :mod:`core.datasets.zip_images`)."""
    files: dict[str, list[PurePosixPath]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, per_class in layout.images.items():
        files[split] = [path for name in layout.classes for path in per_class[name]]
        labels[split] = np.asarray(
            [label for label, name in enumerate(layout.classes) for _ in per_class[name]],
            dtype=np.int64,
        )
    if layout.split_given:
        record = SplitRecord("given")
    else:
        train, test = stratified_split(labels["all"], test_fraction, seed)
        everything, all_labels = files.pop("all"), labels.pop("all")
        files = {"train": [everything[i] for i in train], "test": [everything[i] for i in test]}
        labels = {"train": all_labels[train], "test": all_labels[test]}
        record = SplitRecord("test_fraction", test_fraction=test_fraction, seed=seed)
    class_names = check_classes(labels["train"], labels["test"], layout.classes)
    decoder = _Decoder(read, input_range)
    x_train = decoder.decode(files["train"], scratch_dir)
    x_test = decoder.decode(files["test"], scratch_dir)
    checked = CheckedArrays(
        x_train, labels["train"], x_test, labels["test"], len(class_names), class_names
    )
    return checked, record


class _Decoder:
    """Decodes images into a memory-mapped array, checking that all share one size and mode,
    and that none, nor all together, pass the pixel bounds (:mod:`core.datasets.pixels`): each
    image's size is read from its header and checked before its pixels are decoded."""

    def __init__(self, read: ImageReader, input_range: tuple[float, float]) -> None:
        self.read = read
        self.low, self.high = input_range
        self.reference: tuple[tuple[int, int], str, str] | None = None
        self.pixels = PixelBudget()

    def decode(self, paths: list[PurePosixPath], scratch_dir: Path | None) -> np.ndarray:
        first = self._pixels(paths[0])
        # Every image has the first one's size (checked before each is decoded): the split's
        # pixels are known before its scratch file is made.
        height, width = first.shape[1:]
        self.pixels.add(f"{len(paths)} images of {width}x{height}", width, height, len(paths))
        array = scratch_array((len(paths), *first.shape), scratch_dir)
        scale = (self.high - self.low) / 255.0
        for row, path in enumerate(paths):
            pixels = first if row == 0 else self._pixels(path)
            array[row] = pixels * np.float32(scale) + np.float32(self.low)
        return array

    def _pixels(self, relative: PurePosixPath) -> np.ndarray:
        """One image as uint8 CHW (channels first, so no H/W-vs-channel guessing later)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self.read(relative))) as image:
                size, mode = image.size, image.mode
                self._check_header(relative, size, mode)
                image.load()
                pixels = np.asarray(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise bomb_refusal(f"image {relative}", exc) from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DatasetError(
                f"cannot read image {relative}: {exc}", hint="remove or re-save that file"
            ) from exc
        if pixels.dtype != np.uint8:
            raise DatasetError(
                f"image {relative} has {pixels.dtype} pixels (mode {mode})",
                hint="save images with 8 bits per channel (mode L, RGB or RGBA)",
            )
        hwc = pixels if pixels.ndim == 3 else pixels[:, :, None]
        return hwc.transpose(2, 0, 1)

    def _check_header(self, relative: PurePosixPath, size: tuple[int, int], mode: str) -> None:
        """The size and mode from the image's header, before its pixels are decoded."""
        if self.reference is None:
            self.pixels.check_image(f"image {relative}", *size)
            self.reference = (size, mode, str(relative))
        elif (size, mode) != self.reference[:2]:
            (width, height), ref_mode, ref_name = self.reference
            raise DatasetError(
                f"image {relative} is {size[0]}x{size[1]} {mode} but {ref_name} is "
                f"{width}x{height} {ref_mode}",
                hint="resize and convert all images to one size and colour mode",
            )


def scratch_array(shape: tuple[int, ...], scratch_dir: Path | None = None) -> np.ndarray:
    """A zeroed float32 array of ``shape`` backed by an already-unlinked file in
    ``scratch_dir`` (default: the temp folder): pages the kernel can write back and drop."""
    handle, name = tempfile.mkstemp(prefix="harden-images-", suffix=".f32", dir=scratch_dir)
    try:
        os.close(handle)
        array = np.memmap(name, dtype=np.float32, mode="w+", shape=shape)
    finally:
        # The mapping keeps the file's blocks until the array is freed; no name is left behind.
        os.unlink(name)
    return array
