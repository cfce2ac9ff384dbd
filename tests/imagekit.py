"""Hostile image files for tests of the one decoder (``defr.images.decode_image``)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG header claiming ``width`` × ``height`` pixels and no pixel data: PIL refuses it on open
    as a decompression bomb (more than twice ``Image.MAX_IMAGE_PIXELS``)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
