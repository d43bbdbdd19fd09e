"""How many pixels a dataset's images decode to, bounded before any image is decoded.

An image file is compressed: a 12000x12000 PNG of one colour takes a few KB and decodes to 144
million pixels (576 MB as the float32 the run trains on). The size is in the file's header, so
it is read (:func:`header_size`) and checked against :class:`PixelBudget` before the pixels
are: at upload from each archive entry's first bytes (:mod:`core.datasets.archives`), and again
by the worker before it decodes (:mod:`core.datasets.image_folder`), where an .npz's array
headers give the same numbers (:mod:`core.datasets.npz_upload`, :mod:`core.datasets.npz_file`).
Pillow's own bomb check (``DecompressionBombError`` above about 179 million pixels, a warning
above 89 million) fires far above these bounds; both are refused here the same way.
"""

from __future__ import annotations

import io
import struct

from core.errors import DatasetError

# 4096x4096: far above what an image classifier is trained on (ImageNet models take 224x224),
# far below what Pillow calls a bomb.
MAX_IMAGE_PIXELS = 4096 * 4096
# 200,000 images of 32x32 are 205 million; at most 8 GB of float32 scratch file (4 channels).
MAX_DATASET_PIXELS = 500_000_000
# What is read of each image in an archive at upload to find its size: a PNG's size is in its
# first 24 bytes, a JPEG's after its metadata segments (EXIF, ICC profile), rarely past 64 KB.
HEADER_BYTES = 256 * 1024

PIXELS_HINT = (
    f"resize the images (at most {MAX_IMAGE_PIXELS:,} pixels, e.g. 4096x4096, each and "
    f"{MAX_DATASET_PIXELS:,} in all); classifiers are trained on small images, e.g. 32x32 or "
    "224x224"
)


class PixelBudget:
    """Counts the pixels (width x height) a dataset's images decode to; refuses an image past
    ``max_image`` and a dataset past ``max_dataset``, naming the limit."""

    def __init__(
        self, max_image: int = MAX_IMAGE_PIXELS, max_dataset: int = MAX_DATASET_PIXELS
    ) -> None:
        self.max_image = max_image
        self.max_dataset = max_dataset
        self.total = 0

    def check_image(self, name: str, width: int, height: int) -> None:
        """Refuse one image named ``name`` of ``width`` x ``height`` past ``max_image``."""
        pixels = width * height
        if pixels > self.max_image:
            raise DatasetError(
                f"{name} is {width}x{height}: {pixels:,} pixels, more than the limit of "
                f"{self.max_image:,} pixels per image",
                hint=PIXELS_HINT,
                limit_pixels=self.max_image,
            )

    def add(self, name: str, width: int, height: int, count: int = 1) -> None:
        """Count ``count`` images named ``name`` (one image, or an array of them) of
        ``width`` x ``height``, each checked by :meth:`check_image`."""
        self.check_image(name, width, height)
        self.total += width * height * count
        if self.total > self.max_dataset:
            raise DatasetError(
                f"the dataset's images decode to more than {self.max_dataset:,} pixels, the "
                f"limit per dataset (reached at {name}: {self.total:,})",
                hint=PIXELS_HINT + "; or upload fewer images",
                limit_pixels=self.max_dataset,
            )


def bomb_refusal(name: str, error: Exception) -> DatasetError:
    """Pillow's DecompressionBombError (or its warning, where warnings are errors) as the
    per-image refusal: its threshold lies far above :data:`MAX_IMAGE_PIXELS`."""
    return DatasetError(
        f"{name} has more than the limit of {MAX_IMAGE_PIXELS:,} pixels per image ({error})",
        hint=PIXELS_HINT,
        limit_pixels=MAX_IMAGE_PIXELS,
    )


def header_size(data: bytes, name: str) -> tuple[int, int] | None:
    """(width, height) from the header at the start of an image file's bytes ``data`` (its
    first :data:`HEADER_BYTES` will do), without decoding a pixel; None when Pillow does not
    recognise it there (the worker refuses an unreadable image when it decodes it).

    A size past Pillow's own bomb threshold is refused here (:func:`bomb_refusal`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Image.open reads the header only; the pixels are decoded by load(), never called.
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bomb_refusal(name, exc) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None
    return int(width), int(height)
