"""Limits before cost: a hostile image is refused from its size or header, before any pixel is
decoded, and the uint8 conversion is bounded in memory yet byte-identical to the training one."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from olives.data import decode
from olives.data.decode import (
    DEFAULT_LIMITS,
    DecodeError,
    ImageLimits,
    decode_grey,
    decode_scan,
    load_scan,
    to_uint8_grey,
    upsampled,
)

HUGE = 13000  # the hostile test on main: a 329 KB PNG of 13000 x 13000 cost +2.4 GB, 9.4 s
BOMB = "ignore::PIL.Image.DecompressionBombWarning"  # PIL warns above 89 M pixels


# --- crafted headers (no 13000^2 array is ever allocated here) --------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(
    width: int, height: int, depth: int = 8, colour: int = 0, idat: bytes = b""
) -> bytes:
    """A PNG whose IHDR says `width` x `height`, with whatever (truncated) IDAT is given."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def complete_black_png(side: int, depth: int) -> bytes:
    """A valid, fully decodable PNG of side x side black pixels, streamed (a few hundred KB):
    the decompression bomb itself."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + side * depth // 8)  # filter byte + black pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_header(side, side, depth, 0, idat)


def tiff_header(width: int, height: int, bits: int = 8) -> bytes:
    """A little-endian TIFF with one IFD announcing `width` x `height` and almost no data."""
    entries = [
        (256, 4, width),  # ImageWidth
        (257, 4, height),  # ImageLength
        (258, 3, bits),  # BitsPerSample
        (259, 3, 1),  # no compression
        (262, 3, 1),  # black is zero
        (273, 4, 8),  # StripOffsets
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip
        (279, 4, 10),  # StripByteCounts
    ]
    body = b"".join(
        struct.pack("<HHI", tag, kind, 1)
        + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in entries
    )
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + body + b"\0" * 4


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 frame header announcing `width` x `height`, EOI."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


HOSTILE = {
    "png8": png_header(HUGE, HUGE, 8, idat=zlib.compress(b"\0" * 1000)),
    "png16": png_header(HUGE, HUGE, 16, idat=zlib.compress(b"\0" * 1000)),
    "png-rgb": png_header(HUGE, 9000, 8, colour=2),
    "tiff8": tiff_header(HUGE, HUGE, 8),
    "tiff16": tiff_header(HUGE, HUGE, 16),
    "jpeg": jpeg_header(HUGE, HUGE),
    "png-under-pil-limit": png_header(5000, 5000, 16),  # over ours, under PIL's own warning
    "png-over-pil-error": png_header(20000, 20000, 8),  # PIL itself refuses in Image.open
    "tall": png_header(32, 600_000, 8),  # 19 M pixels in a 32-wide strip
}


def traced_peak_mib(work) -> float:
    """Peak Python/NumPy memory (MiB) allocated while `work()` runs."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.fixture()
def no_pixel_decoded(monkeypatch):
    """Any pixel decoding fails the test: what is refused must be refused from the header."""

    def load(self):
        raise AssertionError(f"pixels were decoded for a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", load)  # TIFF has its own


@pytest.mark.filterwarnings(BOMB)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_huge_header_is_refused_before_any_pixel_is_decoded(name, no_pixel_decoded):
    data = HOSTILE[name]

    def refuse_three_ways() -> None:
        for reader in (decode_grey, decode_scan, lambda d: load_scan(d, 32, 32)):
            with pytest.raises(DecodeError, match=r"over the limit of 16,777,216 pixels"):
                reader(data)

    start = time.perf_counter()
    peak = traced_peak_mib(refuse_three_ways)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0 and peak < 5, (elapsed, peak)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pils_bomb_warning_made_an_error_is_still_one_clear_line():
    with pytest.raises(DecodeError, match=r"^image is over the limit of 16,777,216 pixels \("):
        decode_grey(HOSTILE["png8"])


def test_the_complete_bomb_costs_neither_memory_nor_time():
    """The real hostile file (a valid 13000^2 16-bit PNG, ~330 KB), in a fresh process whose
    peak resident memory is measured: main decoded it with +2.4 GB in 9.4 s."""
    bomb = complete_black_png(HUGE, 16)
    assert len(bomb) < 2**20
    child = textwrap.dedent(
        """
        import resource, sys, time, warnings
        warnings.simplefilter("ignore")
        from olives.data.decode import DecodeError, load_scan
        data = sys.stdin.buffer.read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            load_scan(data, 224, 224)
            print("decoded")
        except DecodeError as exc:
            print("refused", exc)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(f"{time.perf_counter() - start:.3f} {grown}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=bomb, capture_output=True, timeout=120, check=True
    )
    verdict, numbers = done.stdout.decode().strip().splitlines()
    seconds, grown_kib = numbers.split()
    assert verdict.startswith("refused image is 13000 x 13000 = 169,000,000 pixels")
    assert float(seconds) < 0.5 and int(grown_kib) < 20 * 1024, numbers


def test_the_byte_count_is_checked_before_anything_is_parsed(monkeypatch):
    small = ImageLimits(max_bytes=1000, max_pixels=4096 * 4096, min_side=32)

    def never(*args, **kwargs):
        raise AssertionError("the bytes were parsed")

    data = encode(np.zeros((40, 40), np.uint8))
    padded = data + b"\0" * (1001 - len(data))
    monkeypatch.setattr(decode.Image, "open", never)
    with pytest.raises(DecodeError, match=r"^1,001 bytes, over the limit of 1,000 bytes"):
        decode_grey(padded, small)
    with pytest.raises(DecodeError, match="over the limit of 1,000 bytes"):
        load_scan(padded, 32, 32, "stretch", small)
    with pytest.raises(DecodeError, match="empty image bytes"):
        decode_grey(b"", small)


@pytest.mark.parametrize("shape", [(1, 1), (31, 200), (200, 31), (1, 5000)])
def test_a_side_under_min_side_is_no_scan(shape, no_pixel_decoded):
    data = encode(np.full(shape, 128, np.uint8))
    with pytest.raises(DecodeError, match=r"a side under 32 holds no B-scan"):
        decode_scan(data)
    with pytest.raises(DecodeError, match=r"a side under 32 holds no B-scan"):
        load_scan(data, 64, 64)


def test_the_side_rule_is_for_model_inputs_only():
    """`decode_grey` is the plain decoder (its callers may decode small images); the rule
    applies where a scan is meant for the model (`decode_scan`, `load_scan`)."""
    assert decode_grey(encode(np.full((1, 1), 7, np.uint8))).tolist() == [[7]]
    assert load_scan(encode(np.full((32, 32), 7, np.uint8)), 16, 16).shape == (16, 16)


def test_the_defaults_fit_every_real_oct_size_with_margin():
    """The largest B-scans (~1536 x 1024, 16-bit) decode well within the defaults."""
    big = np.random.default_rng(0).integers(0, 65535, (1024, 1536), dtype=np.uint16)
    data = encode(big)
    assert len(data) * 4 < DEFAULT_LIMITS.max_bytes
    assert DEFAULT_LIMITS.max_pixels > 8 * 1024 * 1536
    assert load_scan(data, 496, 504).shape == (496, 504)
    assert min(496, 504) > DEFAULT_LIMITS.min_side


@pytest.mark.parametrize(
    "fields", [(0, 10, 10), (10, -1, 10), (10, 10, 0), (10.5, 10, 10), ("16MiB", 10, 10)]
)
def test_limits_must_be_positive_integers(fields):
    with pytest.raises(ValueError, match=r"ImageLimits\.\w+ must be a positive integer"):
        ImageLimits(*fields)


def test_only_the_documented_formats_are_decoded():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(buffer, format="GIF")
    with pytest.raises(DecodeError, match="cannot decode image"):
        decode_grey(buffer.getvalue())


# --- the uint8 conversion: bounded memory, same bytes -------------------------------------------


def old_to_uint8_grey(array: np.ndarray) -> np.ndarray:
    """The formula the training cache was built with (whole image at once), verbatim."""
    if array.ndim == 3:
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            luma = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            array = luma.astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else luma
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 255.0 if array.dtype.itemsize == 1 else 65535.0
        scaled = array.astype(np.float32) * (255.0 / top)
    else:
        scaled = np.nan_to_num(array.astype(np.float32)) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def random_images(seed: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    floats = rng.normal(0.5, 0.6, shape).astype(np.float32)
    floats[rng.random(shape) < 0.01] = np.nan
    return {
        "uint8": rng.integers(0, 256, shape, dtype=np.uint8),
        "uint16": rng.integers(0, 65536, shape, dtype=np.uint16),
        "int32 (mode I)": rng.integers(0, 65536, shape).astype(np.int32),
        "int16": rng.integers(-32768, 32768, shape).astype(np.int16),
        "int8": rng.integers(-128, 128, shape).astype(np.int8),
        "rgb8": rng.integers(0, 256, (*shape, 3), dtype=np.uint8),
        "rgba8": rng.integers(0, 256, (*shape, 4), dtype=np.uint8),
        "rgb16": rng.integers(0, 65536, (*shape, 3), dtype=np.uint16),
        "grey (h, w, 1)": rng.integers(0, 65536, (*shape, 1), dtype=np.uint16),
        "float32": floats,
        "float64 rgb": rng.random((*shape, 3)),
        "bool": rng.random(shape) < 0.5,
    }


@pytest.mark.parametrize("block", [1, 97, 4096, decode.BLOCK_PIXELS])
def test_conversion_is_byte_identical_to_the_training_formula(monkeypatch, block):
    monkeypatch.setattr(decode, "BLOCK_PIXELS", block)
    for seed, shape in enumerate([(53, 41), (64, 80), (7, 300)]):
        for kind, array in random_images(seed, shape).items():
            got = to_uint8_grey(array)
            assert got.dtype == np.uint8 and got.shape == shape, kind
            np.testing.assert_array_equal(got, old_to_uint8_grey(array), err_msg=kind)


def test_decoded_files_are_byte_identical_to_the_training_decode():
    rng = np.random.default_rng(3)
    files = [
        encode(rng.integers(0, 65536, (300, 260), dtype=np.uint16), "PNG"),
        encode(rng.integers(0, 65536, (300, 260), dtype=np.uint16), "TIFF"),
        encode(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8), "JPEG"),
        encode(rng.integers(0, 256, (300, 260, 4), dtype=np.uint8), "PNG"),
        encode(rng.integers(0, 256, (300, 260), dtype=np.uint8), "BMP"),
    ]
    for data in files:
        expected = old_to_uint8_grey(np.asarray(Image.open(io.BytesIO(data))))
        np.testing.assert_array_equal(decode_grey(data), expected)


def test_conversion_never_makes_a_full_size_float_copy():
    image = np.random.default_rng(0).integers(0, 65536, (2048, 4096), dtype=np.uint16)  # 16 MiB
    old = traced_peak_mib(lambda: old_to_uint8_grey(image))
    new = traced_peak_mib(lambda: to_uint8_grey(image))
    assert old > 64, "the measure must see the old formula's full-size float32 copies"
    assert new < 32, f"{new:.0f} MiB for a 16 MiB image (8 MiB of it the uint8 result)"


def test_two_channel_grey_alpha_is_its_grey_channel():
    la = np.stack([np.full((40, 40), 9, np.uint8), np.full((40, 40), 255, np.uint8)], axis=-1)
    assert (to_uint8_grey(la) == 9).all()
    with pytest.raises(DecodeError, match="unexpected image shape"):
        to_uint8_grey(np.zeros((2, 3, 4, 5), np.uint8))


@pytest.mark.parametrize(
    ("shape", "policy", "expected"),
    [
        ((496, 504), "stretch", False),
        ((100, 504), "stretch", True),
        ((100, 504), "pad", False),  # the long side is scaled down: padded, nothing invented
        ((100, 504), "crop", True),
        ((40, 40), "pad", True),
    ],
)
def test_upsampled_follows_the_resize_policy(shape, policy, expected):
    assert upsampled(shape, 224, 224, policy) is expected
