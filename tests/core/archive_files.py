"""Archive files for the tests of upload checks (core and API)."""

from __future__ import annotations

import io
import zipfile


def zip_claiming(size: int) -> bytes:
    """A one-entry zip whose central directory claims ``size`` uncompressed bytes (< 4 GiB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/zeros.png", b"\0" * 1000)
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")  # the central directory entry
    data[central + 24 : central + 28] = size.to_bytes(4, "little")  # its uncompressed size
    return bytes(data)
