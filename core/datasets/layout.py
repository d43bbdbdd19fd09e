"""The layout of an image-folder dataset, from its paths alone (torch-free, no file opened).

Either ``<class>/<image>`` (no split: the run splits it by ``test_fraction``), ``train/<class>/``
alone (the same), or ``train/<class>/<image>`` and ``test/<class>/<image>``; optionally under one
top folder. The worker and ``harden run`` apply it to the unpacked folder or a local directory
(:func:`core.datasets.image_folder.read_image_folder`), the API to an archive's listing
(:func:`core.datasets.archives.check_archive_listing`), so all refuse the same datasets with the
same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SPLITS = ("train", "test")
# The one wording of the dataset forms, shared by every refusal of a layout or a file.
LAYOUT_HINT = (
    "lay images out as <class>/<image> (split into train and test by test_fraction) or as "
    "train/<class>/<image> and test/<class>/<image>"
)
DATASET_FORMS = (
    "an .npz with x and y (split by test_fraction) or x_train, y_train, x_test, y_test, or a "
    "folder or archive (.zip, .tar, .tar.gz) of images as <class>/<image> or "
    "train/<class>/<image> and test/<class>/<image>"
)
# A stratified split puts at least one image of every class on each side.
MIN_IMAGES_PER_CLASS = 2


@dataclass(frozen=True)
class ImageFolderLayout:
    """Where the images are (``base``), the class names (sorted; label = index) and each split's
    image files per class, sorted by name; paths relative to the root. ``images`` has the keys
    ``train`` and ``test`` when the folder gives its split, else the one key ``all``."""

    base: PurePosixPath
    classes: list[str]
    images: dict[str, dict[str, list[PurePosixPath]]]

    @property
    def split_given(self) -> bool:
        return "test" in self.images

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {split: sum(map(len, per.values())) for split, per in self.images.items()}


def image_folder_layout(
    dirs: Iterable[PurePosixPath], files: Iterable[PurePosixPath]
) -> ImageFolderLayout:
    """The layout of a tree of ``dirs`` and ``files`` (relative paths; the parents of every
    path count as folders); :class:`DatasetError` naming what is missing otherwise."""
    folders = set(dirs)
    by_folder: dict[PurePosixPath, list[PurePosixPath]] = {}
    for file in files:
        by_folder.setdefault(file.parent, []).append(file)
    # The parents of each distinct folder once, not of every file (200,000 files, 10 folders).
    for folder in folders | set(by_folder):
        folders.update(p for p in (folder, *folder.parents) if p != PurePosixPath("."))
    base = _base(folders)
    if base / "train" not in folders:
        if base / "test" in folders:
            raise DatasetError(
                "the dataset has a test/ folder but no train/ folder", hint=LAYOUT_HINT
            )
        return _unsplit(base, folders, by_folder)
    if base / "test" not in folders:
        return _unsplit(base / "train", folders, by_folder)
    classes = {split: _class_folders(base / split, folders) for split in SPLITS}
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        raise DatasetError(
            f"train/ and test/ have different class folders (only in train: {only_train}, "
            f"only in test: {only_test})",
            hint="give both splits the same class folder names",
        )
    images = {split: _images(base / split, classes["train"], by_folder) for split in SPLITS}
    for split in SPLITS:
        if not any(images[split].values()):
            raise DatasetError(
                f"the dataset's {split}/ folder holds no images",
                hint=f"add .png or .jpg files under {split}/<class>/",
            )
    return ImageFolderLayout(base, classes["train"], images)


def _class_folders(parent: PurePosixPath, folders: set[PurePosixPath]) -> list[str]:
    return sorted(d.name for d in folders if d.parent == parent and not d.name.startswith("."))


def _images(
    parent: PurePosixPath, classes: list[str], by_folder: dict[PurePosixPath, list[PurePosixPath]]
) -> dict[str, list[PurePosixPath]]:
    """Each class folder's image files, sorted (``by_folder``: every folder's files)."""
    return {
        name: sorted(
            f for f in by_folder.get(parent / name, []) if f.suffix.lower() in IMAGE_SUFFIXES
        )
        for name in classes
    }


def _unsplit(
    parent: PurePosixPath,
    folders: set[PurePosixPath],
    by_folder: dict[PurePosixPath, list[PurePosixPath]],
) -> ImageFolderLayout:
    """Class folders without a test split: each needs enough images to be split."""
    classes = _class_folders(parent, folders)
    images = _images(parent, classes, by_folder)
    where = f"{parent}/" if parent != PurePosixPath() else "the dataset's top folder"
    if len(classes) < 2:
        raise DatasetError(
            f"{where} has {len(classes)} class folder(s); a classifier needs at least 2",
            hint=LAYOUT_HINT,
        )
    few = [name for name, paths in images.items() if len(paths) < MIN_IMAGES_PER_CLASS]
    if few:
        raise DatasetError(
            f"class folder(s) {few[:10]} in {where} hold fewer than {MIN_IMAGES_PER_CLASS} "
            "images, too few to split into train and test",
            hint="add images to those classes or remove their folders",
        )
    return ImageFolderLayout(parent, classes, {"all": images})


def _base(folders: set[PurePosixPath]) -> PurePosixPath:
    """The folder the dataset starts in: the root, or its one top folder (an archive of a
    folder) when the root holds nothing else."""
    root = PurePosixPath()
    if root / "train" in folders:
        return root
    children = [
        d for d in folders if d.parent == root and d != root and not d.name.startswith(("_", "."))
    ]
    if len(children) == 1:
        only = children[0]
        holds_folders = any(d.parent == only for d in folders)
        if only / "train" in folders or holds_folders:
            return only
    return root
