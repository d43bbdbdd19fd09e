"""The layout of an image-folder dataset, from its paths alone (torch-free, no file opened).

``train/<class>/<image>`` and ``test/<class>/<image>``, optionally under one top folder. The
worker applies it to the unpacked folder (:func:`core.datasets.archives.read_image_folder`), the
API to an archive's listing (:func:`core.datasets.archives.check_archive_listing`), so both
refuse the same archives with the same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SPLITS = ("train", "test")
LAYOUT_HINT = "lay images out as train/<class>/<image> and test/<class>/<image>"


@dataclass(frozen=True)
class ImageFolderLayout:
    """Where the splits are (``base``), the class names (sorted; label = index) and each
    split's image files per class, sorted by name; paths relative to the archive's root."""

    base: PurePosixPath
    classes: list[str]
    images: dict[str, dict[str, list[PurePosixPath]]]


def image_folder_layout(
    dirs: Iterable[PurePosixPath], files: Iterable[PurePosixPath]
) -> ImageFolderLayout:
    """The layout of a tree of ``dirs`` and ``files`` (relative paths; the parents of every
    path count as folders); :class:`DatasetError` naming what is missing otherwise."""
    files = list(files)
    folders = set(dirs)
    for path in [*folders, *files]:
        folders.update(p for p in path.parents if p != PurePosixPath("."))
    base = _base(folders)
    classes: dict[str, list[str]] = {}
    for split in SPLITS:
        if base / split not in folders:
            raise DatasetError(f"the archive has no {split}/ folder", hint=LAYOUT_HINT)
        classes[split] = sorted(
            d.name for d in folders if d.parent == base / split and not d.name.startswith(".")
        )
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        raise DatasetError(
            f"train/ and test/ have different class folders (only in train: {only_train}, "
            f"only in test: {only_test})",
            hint="give both splits the same class folder names",
        )
    images: dict[str, dict[str, list[PurePosixPath]]] = {}
    for split in SPLITS:
        per_class: dict[str, list[PurePosixPath]] = {name: [] for name in classes["train"]}
        for file in files:
            folder = file.parent
            in_a_class = folder.parent == base / split and folder.name in per_class
            if in_a_class and file.suffix.lower() in IMAGE_SUFFIXES:
                per_class[folder.name].append(file)
        if not any(per_class.values()):
            raise DatasetError(
                f"the archive's {split}/ folder holds no images",
                hint=f"add .png or .jpg files under {split}/<class>/",
            )
        images[split] = {name: sorted(paths) for name, paths in per_class.items()}
    return ImageFolderLayout(base, classes["train"], images)


def _base(folders: set[PurePosixPath]) -> PurePosixPath:
    root = PurePosixPath()
    if root / "train" in folders:
        return root
    children = [
        d for d in folders if d.parent == root and d != root and not d.name.startswith(("_", "."))
    ]
    if len(children) == 1 and children[0] / "train" in folders:
        return children[0]
    raise DatasetError("the archive has no train/ folder", hint=LAYOUT_HINT)
