"""Decode one encoded B-scan (PNG, TIFF, JPEG, BMP; 8- or 16-bit; grey or RGB) to a resized uint8.

Limits before cost (`ImageLimits`, one rule for `olives predict`, the served model and the
preprocess stage). Checked in this order, each a one-line `DecodeError`, before the work they
bound: the byte count (before anything is parsed), then the pixel count from the header (before
any pixel is decoded), then, for a scan meant for the model, the shortest side. The defaults
fit every OCT device with a wide margin: the largest B-scans are about 1,536 x 1,024 pixels
(~1.5 M) and a few MB encoded, so `max_pixels = 4096 x 4096` (16.8 M, 11x the largest) and
`max_bytes = 16 MiB` never refuse a real scan, while a decompression bomb (a 329 KB PNG whose
header says 13,000 x 13,000) is refused in microseconds instead of costing gigabytes. A side
under `min_side = 32` pixels holds no retina (and the synthetic generator's floor is the same
32). Only the first frame of a multi-frame TIFF is decoded, so frames do not add to the cost;
a decoded pixel takes at most 4 bytes (modes I, F, RGBA), so one image costs at most
`4 x max_pixels` bytes (64 MiB) plus the uint8 result. `max_volume_pixels` bounds a DICOM
volume (`olives.serving.scans`): 64 full-size B-scans (~1.07 G pixels), several times the
densest OCT cube (~500 x 1536 x 500 = 0.4 G).

Conversion to uint8 (`to_uint8_grey`) works in row blocks of `BLOCK_PIXELS`: never a
full-size float32 copy of the image, and byte-identical to the whole-image formula the training
cache was built with (the formula is elementwise per row).

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
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from olives.errors import InputError

RESIZE_POLICIES = ("stretch", "pad", "crop")
FORMATS = ("PNG", "TIFF", "JPEG", "BMP")  # what B-scans come as; no other decoder is tried
BLOCK_PIXELS = 1 << 20  # pixels converted at a time by `to_uint8_grey` (4 MiB of float32)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's convert("L")


class DecodeError(InputError, ValueError):
    """The bytes are not a decodable image, or one over the limits."""


@dataclass(frozen=True)
class ImageLimits:
    """What one scan may cost before any work is spent on it (see the module docstring)."""

    max_bytes: int
    max_pixels: int
    min_side: int
    max_volume_pixels: int = 64 * 4096 * 4096

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "min_side", "max_volume_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ImageLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = ImageLimits(max_bytes=16 * 2**20, max_pixels=4096 * 4096, min_side=32)


def check_bytes(size: int, cap: int = DEFAULT_LIMITS.max_bytes) -> None:
    """Refuse `size` bytes over `cap` (`max_bytes`, or a volume's per-frame allowance)."""
    if size > cap:
        raise DecodeError(f"{size:,} bytes, over the limit of {cap:,} bytes ({cap / 2**20:g} MiB)")


def check_pixels(height: int, width: int, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse an image whose header announces more than `max_pixels`."""
    if height * width > limits.max_pixels:
        raise DecodeError(
            f"image is {width} x {height} = {height * width:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels"
        )


def check_sides(height: int, width: int, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse an image too small to hold a B-scan (a side under `min_side`)."""
    if min(height, width) < limits.min_side:
        raise DecodeError(
            f"image is {width} x {height} pixels: a side under {limits.min_side} holds no B-scan"
        )


def check_size(height: int, width: int, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Both size rules of a scan meant for the model: not too many pixels, no side too short."""
    check_pixels(height, width, limits)
    check_sides(height, width, limits)


def decode_grey(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> 2-D uint8 array; 16-bit is scaled by its full range, RGB to luma.
    Checks bytes and pixels (the cost limits) first; the side rule is `decode_scan`'s."""
    return _decode(data, limits, sides=False)


def decode_scan(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """`decode_grey` for a scan meant for the model: also refuses a side under `min_side`."""
    return _decode(data, limits, sides=True)


def _decode(data: bytes, limits: ImageLimits, sides: bool) -> np.ndarray:
    if not data:
        raise DecodeError("empty image bytes")
    check_bytes(len(data), limits.max_bytes)
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size  # from the header: nothing is decoded yet
            check_pixels(height, width, limits)
            if sides:
                check_sides(height, width, limits)
            img.load()
            array = np.asarray(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own check runs inside `Image.open`, before ours (a warning made an error)
        raise DecodeError(
            f"image is over the limit of {limits.max_pixels:,} pixels ({exc})"
        ) from None
    except Exception as exc:  # PIL raises many types for bad data
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise DecodeError(f"cannot decode image: {reason}") from exc
    return to_uint8_grey(array)


def to_uint8_grey(array: np.ndarray) -> np.ndarray:
    """Any grey/RGB(A) array -> uint8 grey. Integers are scaled by their bit depth (8 or 16).

    Converted `BLOCK_PIXELS` at a time into the uint8 result, so the float32 temporaries stay
    small whatever the image size; each pixel goes through the same float32 operations as the
    whole-image formula, so the bytes are identical."""
    if array.ndim == 3 and array.shape[-1] in (1, 2):  # grey, grey + alpha
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] < 3):
        raise DecodeError(f"unexpected image shape {array.shape}")
    if array.ndim == 2 and array.dtype == np.uint8:
        return array
    out = np.empty(array.shape[:2], dtype=np.uint8)
    rows = max(1, BLOCK_PIXELS // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        out[start : start + rows] = _block_to_uint8(array[start : start + rows])
    return out


def _block_to_uint8(block: np.ndarray) -> np.ndarray:
    """The conversion formula on a block of rows (RGB(A) -> luma, then scaled to 0..255)."""
    if block.ndim == 3:  # alpha is ignored
        luma = block[..., :3].astype(np.float32) @ LUMA
        block = luma.astype(block.dtype) if np.issubdtype(block.dtype, np.integer) else luma
    if block.dtype == np.uint8:
        return block
    if block.dtype == np.bool_:
        return block.astype(np.uint8) * 255
    if np.issubdtype(block.dtype, np.integer):
        # 16-bit scans (PIL modes I;16 and I): 0..65535 -> 0..255, like PIL's own conversion.
        top = 255.0 if block.dtype.itemsize == 1 else 65535.0
        scaled = block.astype(np.float32) * (255.0 / top)
    else:  # float images: [0, 1] scaled to 0..255
        scaled = np.nan_to_num(block.astype(np.float32)) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def upsampled(shape: tuple[int, int], height: int, width: int, policy: str = "stretch") -> bool:
    """Whether `resize` enlarges an image of `shape` (h, w) on some axis: it then invents detail
    the scan does not have (a warning for predictions)."""
    h, w = shape
    if policy == "stretch":
        return height > h or width > w
    scale = (min if policy == "pad" else max)(height / h, width / w)
    return scale > 1


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


def load_scan(
    data: bytes,
    height: int,
    width: int,
    policy: str = "stretch",
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Decode (within `limits`, side rule included) and resize in one call: what the
    preprocess workers run."""
    return resize(decode_scan(data, limits), height, width, policy)
