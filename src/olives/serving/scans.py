"""Scans to predict on, from what users have: image files, folders, an ImageFolder with
`metadata.csv`, parquet in the hub schema, DICOM ophthalmic tomography volumes.

Every input becomes `Scan`s: one per B-scan, with the encoded bytes or the decoded pixels,
the raw clinical values when known, and the ids that group scans (patient, eye, visit,
volume). Nothing is decoded or resized here: `olives.serving.predictor` does that with the training
code. An input that cannot be read becomes a `Scan` with an `error`, never an exception, so
one bad file does not stop a batch.

Volume ids, when the input does not state them: a DICOM file is one volume (its frames are
the B-scans); an image file's volume is its folder; a parquet row's volume is the folder of
its image path. `metadata.csv` may name `volume`, `visit`, `eye` and `patient` explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from olives.data.volumes import parquet_volume

IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
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


def read_scans(inputs: Sequence[str | Path], clinical: Sequence[str]) -> Iterator[Scan]:
    """Every scan of every input, in order; folders are walked in sorted order."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from _folder(path, clinical)
        elif path.is_file():
            yield from _file(path, clinical)
        else:
            yield Scan(str(path), error=f"not found: {path}")


def _folder(folder: Path, clinical: Sequence[str]) -> Iterator[Scan]:
    metadata = folder / "metadata.csv"
    if metadata.is_file():
        yield from imagefolder_scans(folder, metadata, clinical)
        return
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _readable(p))
    if not files:
        yield Scan(str(folder), error=f"no image, DICOM or parquet file in {folder}")
    for path in files:
        yield from _file(path, clinical)


def _readable(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES | DICOM_SUFFIXES or suffix == ".parquet"


def _file(path: Path, clinical: Sequence[str]) -> Iterator[Scan]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from parquet_scans(path, clinical)
    elif suffix in DICOM_SUFFIXES or _is_dicom(path):
        yield from dicom_scans(path)
    else:
        yield image_scan(path)


def image_scan(path: Path, **ids: Any) -> Scan:
    """An encoded image file; its volume is what `ids` say, else `olives.data.volumes`'s rule."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Scan(str(path), error=f"cannot read {path}: {exc.strerror or exc}", **ids)
    if not data:
        return Scan(str(path), error=f"empty file: {path}", **ids)
    return Scan(str(path), data=data, **ids)


def imagefolder_scans(root: Path, metadata: Path, clinical: Sequence[str]) -> Iterator[Scan]:
    """`metadata.csv` with `file_name` and optional clinical, patient/eye/visit/volume columns."""
    table = pd.read_csv(metadata, dtype={"file_name": str})
    if "file_name" not in table.columns:
        yield Scan(str(metadata), error=f"{metadata}: no 'file_name' column")
        return
    for line, rec in enumerate(table.to_dict("records"), start=2):
        ids = _ids(rec)
        scan = image_scan(root / str(rec["file_name"]), **ids)
        scan.index = int(rec["index"]) if _present(rec.get("index")) else 0
        scan.clinical = {name: number(rec.get(name)) for name in clinical}
        bad = [n for n in clinical if _present(rec.get(n)) and scan.clinical[n] is None]
        if bad:
            scan.error = f"column '{bad[0]}' is {rec[bad[0]]!r}, not a number"
        if scan.error:
            scan.error = f"{metadata} line {line}: {scan.error}"
        yield scan


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
            scan.clinical = {c: number(rec.get(c)) for c in clinical}
            if not scan.data:
                scan.error = f"{path} row {row_number}: no image bytes"
            row_number += 1
            yield scan


def _is_dicom(path: Path) -> bool:
    """The DICOM part-10 preamble: 128 bytes, then 'DICM'."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_scans(path: Path) -> Iterator[Scan]:
    """Each frame of a (multi-frame) DICOM image as one B-scan of the file's volume."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        frames = np.asarray(ds.pixel_array)
    except (InvalidDicomError, AttributeError, ValueError, OSError, RuntimeError) as exc:
        yield Scan(str(path), error=f"cannot read DICOM {path}: {exc}")
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
        yield Scan(str(path), index=i, pixels=frame, **ids)


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
    """A clinical value as a float, None when blank, NaN or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
