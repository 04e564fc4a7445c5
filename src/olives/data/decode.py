"""Decode one encoded B-scan (PNG, TIFF, JPEG; 8- or 16-bit; grey or RGB) to a resized uint8.

Resize policy (`preprocess.resize`), for the many OCT widths (504, 768, 1024, 1536 x 496):
- `stretch` (default): scale width and height independently to the target. OCT pixels are not
  square anyway (a 496-px A-scan covers ~2 mm of depth, a 504-px B-scan ~6 mm of retina, and
  devices differ), so the pixel aspect ratio carries no physical meaning worth preserving, and
  stretching keeps the whole lateral field of view, where vitreous and peripheral biomarkers
  (B2, B4) often sit.
- `pad`: keep the aspect ratio, scale the long side to fit and pad the rest with black (the
  vitreous/choroid background), for models that must see undistorted shapes.
- `crop`: keep the aspect ratio, scale the short side to fit and centre-crop the long side
  (loses the scan's lateral edges).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from olives.errors import InputError

RESIZE_POLICIES = ("stretch", "pad", "crop")


class DecodeError(InputError, ValueError):
    """The bytes are not a decodable image."""


def decode_grey(data: bytes) -> np.ndarray:
    """Encoded bytes -> 2-D uint8 array; 16-bit is scaled by its full range, RGB to luma."""
    if not data:
        raise DecodeError("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            array = np.asarray(img)
    except Exception as exc:  # PIL raises many types for bad data
        raise DecodeError(f"cannot decode image: {exc}") from exc
    return to_uint8_grey(array)


def to_uint8_grey(array: np.ndarray) -> np.ndarray:
    """Any grey/RGB(A) array -> uint8 grey. Integers are scaled by their bit depth (8 or 16)."""
    if array.ndim == 3:
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:  # ITU-R 601 luma, as PIL's convert("L"); alpha is ignored
            luma = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            array = luma.astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else luma
    if array.ndim != 2:
        raise DecodeError(f"unexpected image shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        # 16-bit scans (PIL modes I;16 and I): 0..65535 -> 0..255, like PIL's own conversion.
        top = 255.0 if array.dtype.itemsize == 1 else 65535.0
        scaled = array.astype(np.float32) * (255.0 / top)
    else:  # float images: [0, 1] scaled to 0..255
        scaled = np.nan_to_num(array.astype(np.float32)) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def resize(array: np.ndarray, height: int, width: int, policy: str = "stretch") -> np.ndarray:
    """Resize a uint8 grey image with antialiasing (PIL's reducing resample)."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"preprocess.resize: {policy!r} is not one of {RESIZE_POLICIES}")
    img = Image.fromarray(array)
    h, w = array.shape
    if policy == "stretch":
        return np.asarray(img.resize((width, height), Image.BILINEAR, reducing_gap=2.0))
    scale = (min if policy == "pad" else max)(height / h, width / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = np.asarray(img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0))
    out = np.zeros((height, width), dtype=np.uint8)
    if policy == "pad":
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[top : top + new_h, left : left + new_w] = scaled
    else:
        top, left = (new_h - height) // 2, (new_w - width) // 2
        out[:] = scaled[top : top + height, left : left + width]
    return out


def load_scan(data: bytes, height: int, width: int, policy: str = "stretch") -> np.ndarray:
    """Decode and resize in one call: what the preprocess workers run."""
    return resize(decode_grey(data), height, width, policy)
