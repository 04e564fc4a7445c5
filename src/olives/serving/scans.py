"""Scans to predict on, from what users have: image files, folders, an ImageFolder with
`metadata.csv`, parquet in the hub schema, DICOM ophthalmic tomography volumes.

Every input becomes `Scan`s: one per B-scan, with the encoded bytes or the decoded pixels,
the raw clinical values when known, and the ids that group scans (patient, eye, visit,
volume). Nothing is decoded or resized here: `olives.serving.predictor` does that with the training
code. An input that cannot be read becomes a `Scan` with an `error`, never an exception, so
one bad file does not stop a batch.

Every input gets a row. A path the user names, and in a folder walk every entry named like
something we read (image, DICOM, parquet) and every broken or looping link, is a scan or an
error row naming that path: a link loop, a broken link, a FIFO, socket or device, a directory
named like an image (`x.png/`), an unreadable or empty file. Only regular files are ever opened
(`os.stat` first, then `fstat` on the open descriptor; a FIFO is never opened, so it cannot
block), and a file's size is checked against `ImageLimits.max_bytes` before it is read (at most
`max_bytes + 1` bytes are). Unrelated files in a folder (README.txt) are skipped as before;
links to folders are followed, each folder walked once (a link back up is no loop).

Which problems are errors (no prediction) and which are warnings: `olives.serving.predictor`.
A DICOM whose `Modality` is not `OPT` is an error (a CT is no B-scan); one with no `Modality`
is read as OPT with a warning.

DICOM limits, from the header before any pixel is read: each frame is a B-scan and meets the
image limits (pixels, sides); the file may hold `max_bytes` per frame; the whole volume at most
`max_volume_pixels` (`olives.data.decode`).

Volume ids, when the input does not state them: a DICOM file is one volume (its frames are
the B-scans); an image file's volume is its folder; a parquet row's volume is the folder of
its image path. `metadata.csv` may name `volume`, `visit`, `eye` and `patient` explicitly.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from olives.data.decode import DEFAULT_LIMITS, DecodeError, ImageLimits, check_bytes, check_size
from olives.data.schema import clinical_problem
from olives.data.volumes import parquet_volume
from olives.errors import InputError
from olives.io import inside, not_a_file, not_regular, open_regular, stat_or_why
from olives.io import read_regular as io_read_regular

IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
SCAN_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES  # a directory so named is an error row
READ_SUFFIXES = SCAN_SUFFIXES | {".parquet"}  # a partitioned parquet folder is walked
DICOM_MODALITY = "OPT"  # ophthalmic tomography
DEFER_BYTES = 4096  # DICOM header values larger than this are not read while checking it
ID_COLUMNS = {  # metadata.csv / parquet column -> Scan field
    "patient": ("patient", "Patient_ID", "PatientID"),
    "eye": ("eye", "Eye_ID", "laterality"),
    "visit": ("visit",),
    "volume": ("volume",),
}


@dataclass
class Scan:
    """One B-scan to predict on."""

    source: str
    index: int = 0
    data: bytes | None = None  # encoded image (PNG, TIFF, JPEG)
    pixels: np.ndarray | None = None  # or decoded pixels (a DICOM frame)
    clinical: dict[str, float | None] = field(default_factory=dict)
    patient: str | None = None
    eye: str | None = None
    visit: str | None = None
    volume: str | None = None
    error: str | None = None
    warning: str | None = None


def read_scans(
    inputs: Sequence[str | Path],
    clinical: Sequence[str],
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Iterator[Scan]:
    """Every scan of every input, in order; folders are walked in sorted order."""
    for item in inputs:
        path = Path(item)
        info = stat_or_why(path)
        if isinstance(info, str):
            yield Scan(str(path), error=info)
        elif stat.S_ISDIR(info.st_mode) and path.suffix.lower() not in SCAN_SUFFIXES:
            yield from _folder(path, clinical, limits)
        elif stat.S_ISREG(info.st_mode):
            yield from _file(path, clinical, limits)
        else:
            yield Scan(str(path), error=not_a_file(path, info))


def _folder(folder: Path, clinical: Sequence[str], limits: ImageLimits) -> Iterator[Scan]:
    metadata = folder / "metadata.csv"
    if os.path.lexists(metadata):  # an ImageFolder: its listing, or one row saying why not
        problem = not_regular(metadata)
        if problem:
            yield Scan(str(metadata), error=problem)
        else:
            yield from imagefolder_scans(folder, metadata, clinical, limits)
        return
    found = False
    for path, problem in _walk(folder, set()):
        found = True
        if problem:
            yield Scan(str(path), error=problem)
        else:
            yield from _file(path, clinical, limits)
    if not found:
        yield Scan(str(folder), error=f"no image, DICOM or parquet file in {folder}")


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[tuple[Path, str | None]]:
    """The files to read (problem None) and the entries that look like input but cannot be
    read (with why), in sorted path order; a folder reached twice through links is walked once."""
    info = os.stat(folder)
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        yield folder, f"cannot list {folder}: {exc.strerror or exc}"
        return
    for name in names:
        path = folder / name
        suffix, entry = path.suffix.lower(), stat_or_why(path)
        if isinstance(entry, str):
            if suffix in READ_SUFFIXES or os.path.islink(path):
                yield path, entry
        elif stat.S_ISDIR(entry.st_mode):
            if suffix in SCAN_SUFFIXES:
                yield path, not_a_file(path, entry)
            else:
                yield from _walk(path, seen)
        elif suffix in READ_SUFFIXES:
            yield path, None if stat.S_ISREG(entry.st_mode) else not_a_file(path, entry)


def read_regular(path: Path, max_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
    """`olives.io.read_regular` with the image byte cap."""
    return io_read_regular(path, max_bytes)


def _file(path: Path, clinical: Sequence[str], limits: ImageLimits) -> Iterator[Scan]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from parquet_scans(path, clinical)
    elif suffix in DICOM_SUFFIXES or _is_dicom(path):
        yield from dicom_scans(path, limits)
    else:
        yield image_scan(path, limits)


def image_scan(path: Path, limits: ImageLimits = DEFAULT_LIMITS, **ids: Any) -> Scan:
    """An encoded image file; its volume is what `ids` say, else `olives.data.volumes`'s rule."""
    try:
        return Scan(str(path), data=read_regular(path, limits.max_bytes), **ids)
    except InputError as exc:
        return Scan(str(path), error=str(exc), **ids)


def imagefolder_scans(
    root: Path, metadata: Path, clinical: Sequence[str], limits: ImageLimits = DEFAULT_LIMITS
) -> Iterator[Scan]:
    """`metadata.csv` with `file_name` and optional clinical, patient/eye/visit/volume columns;
    a `file_name` must stay inside `root` (`olives.io.inside`)."""
    try:
        table = pd.read_csv(metadata, dtype={"file_name": str})
    except (OSError, ValueError) as exc:  # pandas' parser and empty-data errors included
        yield Scan(str(metadata), error=f"cannot read {metadata}: {exc}")
        return
    if "file_name" not in table.columns:
        yield Scan(str(metadata), error=f"{metadata}: no 'file_name' column")
        return
    for line, rec in enumerate(table.to_dict("records"), start=2):
        scan = _listed_scan(root, rec, limits)
        scan.clinical, problem = clinical_values(rec, clinical)
        if scan.error is None:
            scan.error = problem or _index_problem(rec)
        if scan.error is None:
            scan.index = int(float(rec["index"])) if _present(rec.get("index")) else 0
        else:
            scan.error = f"{metadata} line {line}: {scan.error}"
        yield scan


def _listed_scan(root: Path, rec: dict[str, Any], limits: ImageLimits) -> Scan:
    """The image a `metadata.csv` row names, or an error row when the name leaves the folder."""
    ids, name = _ids(rec), rec.get("file_name")
    if not _present(name):
        return Scan(str(root), error="no 'file_name'", **ids)
    try:
        path = inside(root, str(name))
    except InputError as exc:
        return Scan(str(root / str(name)), error=str(exc), **ids)
    except (RuntimeError, OSError):  # Path.resolve on a link loop (Python 3.11)
        return Scan(str(root / str(name)), error=f"{root / str(name)}: symbolic link loop", **ids)
    return image_scan(path, limits, **ids)


def _index_problem(rec: dict[str, Any]) -> str | None:
    value, parsed = rec.get("index"), number(rec.get("index"))
    if _present(value) and (parsed is None or not parsed.is_integer() or parsed < 0):
        return f"column 'index' is {value!r}, not a frame number"
    return None


def clinical_values(
    rec: dict[str, Any], names: Sequence[str]
) -> tuple[dict[str, float | None], str | None]:
    """A row's clinical values as numbers (None: missing, imputed) and the first problem: a
    value that is not a number, or one `clinical_problem` refuses."""
    values = {name: number(rec.get(name)) for name in names}
    for name in names:
        if _present(rec.get(name)) and values[name] is None:
            shown = repr(rec[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return values, f"column '{name}' is {shown}, not a number"
    return values, clinical_error(values)


def clinical_error(values: dict[str, float | None]) -> str | None:
    """The first clinical value that may not reach the model (`clinical_problem`), or None."""
    return next((p for n, v in values.items() if (p := clinical_problem(n, v))), None)


def parquet_scans(path: Path, clinical: Sequence[str]) -> Iterator[Scan]:
    """Rows of a parquet file in the hub schema (`Image` struct with bytes and path); a row's
    source is its image path (`<file>#<row>` when it has none)."""
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a foreign file
        yield Scan(str(path), error=f"cannot read parquet {path}: {exc}")
        return
    row_number = 0
    for batch in reader.iter_batches(batch_size=64, use_threads=False):
        for rec in batch.to_pylist():
            image = rec.get("Image") or {}
            name = image.get("path") or f"{path}#{row_number}"
            ids = {"volume": parquet_volume(name)} | _ids(rec)
            scan = Scan(name, index=row_number, data=image.get("bytes"), **ids)
            scan.clinical, problem = clinical_values(rec, clinical)
            problem = problem if scan.data else "no image bytes"
            if problem:
                scan.error = f"{path} row {row_number}: {problem}"
            row_number += 1
            yield scan


def _is_dicom(path: Path) -> bool:
    """The DICOM part-10 preamble: 128 bytes, then 'DICM'."""
    try:
        with open_regular(path) as handle:
            return handle.read(132)[128:] == b"DICM"
    except (OSError, InputError):
        return False


def dicom_scans(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> Iterator[Scan]:
    """Each frame of a (multi-frame) DICOM image as one B-scan of the file's volume; the
    header is checked (modality, sizes, file size) before any pixel is read."""
    try:
        ds, frames, warning = _read_dicom(path, limits)
    except InputError as exc:
        yield Scan(str(path), error=str(exc))
        return
    if frames.ndim == 2 or (frames.ndim == 3 and frames.shape[-1] in (3, 4) and _is_colour(ds)):
        frames = frames[None]
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        frames = frames.max() - frames  # white is zero in MONOCHROME1
    ids = {
        "patient": _text(ds.get("PatientID")),
        "eye": _text(ds.get("ImageLaterality") or ds.get("Laterality")),
        "visit": _text(ds.get("StudyDate") or ds.get("SeriesDate")),
        "volume": _text(ds.get("SOPInstanceUID")) or str(path),
    }
    for i, frame in enumerate(frames):
        yield Scan(str(path), index=i, pixels=frame, warning=warning, **ids)


def _read_dicom(path: Path, limits: ImageLimits) -> tuple[Any, np.ndarray, str | None]:
    """The dataset, its frames and the header's warning; an `InputError` naming the path."""
    import pydicom

    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise InputError("empty file")
            header = pydicom.dcmread(handle, stop_before_pixels=True, defer_size=DEFER_BYTES)
            warning = check_dicom_header(header, size, limits)
            handle.seek(0)
            ds = pydicom.dcmread(handle)
            return ds, np.asarray(ds.pixel_array), warning
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except Exception as exc:  # pydicom raises many types for foreign or broken files
        raise InputError(f"cannot read DICOM {path}: {exc}") from None


def check_dicom_header(ds: Any, size: int, limits: ImageLimits) -> str | None:
    """Refuse (`DecodeError`) a header that is not ophthalmic tomography or is over the limits
    (see the module docstring); return the warning for a header with no `Modality`."""
    modality = _text(ds.get("Modality"))
    if modality is not None and modality.strip().upper() != DICOM_MODALITY:
        raise DecodeError(f"DICOM modality {modality!r} is not ophthalmic tomography (OPT)")
    rows, columns, frames = (_whole(ds, key) for key in ("Rows", "Columns", "NumberOfFrames"))
    if not rows or not columns:
        raise DecodeError("DICOM holds no image (no Rows or Columns)")
    frames = frames or 1
    check_size(rows, columns, limits)
    if rows * columns * frames > limits.max_volume_pixels:
        raise DecodeError(
            f"DICOM volume is {frames} frames of {columns} x {rows} = "
            f"{rows * columns * frames:,} pixels, over the limit of {limits.max_volume_pixels:,}"
        )
    check_bytes(size, limits.max_bytes * frames)
    return None if modality else "DICOM has no Modality: read as ophthalmic tomography (OPT)"


def _whole(ds: Any, key: str) -> int | None:
    """A header count (`Rows`, `NumberOfFrames`) as an int, None when absent."""
    value = ds.get(key)
    if value is None or str(value).strip() == "":
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        raise DecodeError(f"DICOM {key} is {str(value)!r}, not a whole number") from None
    if count < 1:
        raise DecodeError(f"DICOM {key} is {count}, not a positive count")
    return count


def _is_colour(ds: Any) -> bool:
    return int(ds.get("SamplesPerPixel", 1)) > 1


def _ids(rec: dict[str, Any]) -> dict[str, str | None]:
    out = {}
    for name, columns in ID_COLUMNS.items():
        value = next((rec[c] for c in columns if _present(rec.get(c))), None)
        out[name] = _text(value)
    return {k: v for k, v in out.items() if v is not None}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    """An id as text: 7.0 -> '7' (float ids from parquet), strings unchanged."""
    if not _present(value) or str(value) == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def number(value: Any) -> float | None:
    """A clinical value as a float, None when blank, NaN or not a number (a bool is not one:
    `true` for BCVA is a client's bug, not 1 letter)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
