"""The `preprocess` stage: raw parquet shards -> one memory-mapped uint8 image cache + index.

Images are decoded exactly once here (never per epoch): training reads `images.npy`
(N x H x W, uint8, memory-mapped) and `index.parquet` (one row per cached image: labels,
clinical values, patient, eye, source split, content hash, duplicate group). Rows are streamed
a batch at a time and decoded by a small thread pool (PIL releases the GIL), so peak memory is
bounded by `batch_rows` whatever the dataset size. Parquet is read single-threaded
(`use_threads=False`): Arrow's threaded column decoding left per-thread allocator heaps that
grew peak memory with every shard read (measured: +140 MB over 2,000 rows).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from olives.config import PreprocessConfig
from olives.data.decode import DecodeError, load_scan
from olives.data.ids import uniform
from olives.data.schema import Columns, check_schema
from olives.errors import InputError
from olives.io import reset_dir

IMAGES = "images.npy"
INDEX = "index.parquet"
SKIPPED = "skipped.csv"
DUPLICATES = "duplicates.csv"


class TooManyCorruptError(InputError, RuntimeError):
    """More empty or undecodable images than `preprocess.max_corrupt_fraction` allows."""


EMPTY_REASON = "empty file (0 bytes)"  # skipped.csv's reason for an image without bytes


class BrokenCacheError(InputError, RuntimeError):
    """The image cache is missing, truncated or another program's: rebuild it."""


@dataclass(frozen=True)
class RawFile:
    split: str
    path: Path
    rows: int


def list_raw(raw_dir: Path, cols: Columns) -> list[RawFile]:
    """Every shard under `raw_dir/<split>/`, schema-checked from its footer (no data read)."""
    files = []
    for path in sorted(Path(raw_dir).glob("*/*.parquet")):
        meta = pq.ParquetFile(path)
        check_schema(meta.schema_arrow, cols.features(), str(path), cols.ids)
        files.append(RawFile(path.parent.name, path, meta.metadata.num_rows))
    if not files:
        raise FileNotFoundError(
            f"no parquet shard under {raw_dir}/<split>/: run `olives stage download`"
        )
    return files


def build_cache(raw_dir: Path, cfg: PreprocessConfig, cols: Columns) -> dict[str, Any]:
    """Decode every raw row once into `cfg.cache_dir`; return the preprocess report."""
    files = list_raw(raw_dir, cols)
    out = reset_dir(Path(cfg.cache_dir))
    total = sum(f.rows for f in files)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with (
        open_image_file(out / IMAGES, (total, cfg.height, cfg.width)) as sink,
        ThreadPoolExecutor(cfg.num_workers or os.cpu_count() or 1) as pool,
    ):
        for batch in _batches(files, cols, cfg.batch_rows):
            blobs = [rec.pop("_bytes") for rec in batch]
            decoded = pool.map(lambda b: _decode(b, cfg), blobs)
            for rec, result in zip(batch, decoded, strict=True):
                if isinstance(result, str):
                    skipped.append(
                        {k: rec[k] for k in ("source_split", "source_row", "path")}
                        | {"reason": result}
                    )
                    continue
                rec["row"] = len(records)
                sink.write(result.tobytes())
                records.append(rec)
    # The listing first: it survives any failure below, naming every skipped image.
    pd.DataFrame(skipped, columns=["source_split", "source_row", "path", "reason"]).to_csv(
        out / SKIPPED, index=False
    )
    _check_corrupt(skipped, total, cfg.max_corrupt_fraction, out / SKIPPED)
    index = _finish_index(pd.DataFrame.from_records(records), cols)
    index.to_parquet(out / INDEX, index=False)
    dups = duplicate_table(index, cols)
    dups.to_csv(out / DUPLICATES, index=False)
    return _report(index, skipped, dups, total, cfg, cols)


@contextmanager
def open_image_file(path: Path, shape: tuple[int, int, int]) -> Iterator[BinaryIO]:
    """An `.npy` of `shape` (uint8, zero-filled) opened for sequential writes after its header.

    Plain writes rather than a memmap: written pages of a memmap count in the process's
    resident memory, so a memmap would make peak RSS grow with the dataset."""
    header_only = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    del header_only  # writes the header and sizes the (sparse) file
    offset = path.stat().st_size - int(np.prod(shape))
    with open(path, "r+b") as handle:
        handle.seek(offset)
        yield handle


def _batches(
    files: list[RawFile], cols: Columns, batch_rows: int
) -> Iterator[list[dict[str, Any]]]:
    """Stream `batch_rows` rows at a time as flat records (image bytes under `_bytes`)."""
    wanted = [cols.image, *cols.labels, *cols.clinical, cols.patient]
    if cols.eye:
        wanted.append(cols.eye)
    for file in files:
        reader = pq.ParquetFile(file.path)
        offset = 0
        for batch in reader.iter_batches(batch_rows, columns=wanted, use_threads=False):
            rows = batch.to_pylist()
            yield [_record(file, offset + i, row, cols) for i, row in enumerate(rows)]
            offset += len(rows)


def _record(file: RawFile, source_row: int, row: dict[str, Any], cols: Columns) -> dict[str, Any]:
    image = row[cols.image] or {}
    data = image.get("bytes") or b""
    path = image.get("path") or f"{file.path.name}#{source_row}"
    rec: dict[str, Any] = {
        "image_id": f"{file.split}/{path}",
        "path": path,
        "source_split": file.split,
        "source_file": file.path.name,
        "source_row": source_row,
        "sha1": hashlib.sha1(data).hexdigest(),
        "_bytes": data,
        cols.patient: row[cols.patient],
    }
    rec["eye"] = row[cols.eye] if cols.eye else None
    for name in (*cols.labels, *cols.clinical):
        rec[name] = row[name]
    return rec


def _decode(data: bytes, cfg: PreprocessConfig) -> np.ndarray | str:
    """The resized image, or the reason it could not be decoded (a string)."""
    if not data:
        return EMPTY_REASON
    try:
        return load_scan(data, cfg.height, cfg.width, cfg.resize)
    except DecodeError as exc:
        return str(exc)


def _finish_index(index: pd.DataFrame, cols: Columns) -> pd.DataFrame:
    """Add the labelled flag and a duplicate group (the first row holding the same bytes)."""
    if index.empty:
        raise DecodeError("no image could be decoded: see skipped.csv")
    index["labelled"] = index[list(cols.labels)].notna().all(axis=1)
    index["dup_group"] = index.groupby("sha1")["row"].transform("min").astype(np.int64)
    index[cols.patient] = uniform(index[cols.patient])
    index["eye"] = uniform(index["eye"])
    return index


def duplicate_table(index: pd.DataFrame, cols: Columns) -> pd.DataFrame:
    """Byte-identical images: one line per duplicated row, with its group and patient."""
    dup = index[index.duplicated("sha1", keep=False)]
    keep = ["dup_group", "row", "image_id", cols.patient, "source_split", "labelled"]
    return dup[keep].sort_values(["dup_group", "row"]).reset_index(drop=True)


def _report(
    index: pd.DataFrame,
    skipped: list,
    dups: pd.DataFrame,
    total: int,
    cfg: PreprocessConfig,
    cols: Columns,
) -> dict[str, Any]:
    groups = dups.groupby("dup_group")
    return {
        "rows_in": total,
        "cached": len(index),
        "labelled": int(index["labelled"].sum()),
        "unlabeled": int((~index["labelled"]).sum()),
        "skipped_corrupt": len(skipped),
        "skipped_empty": sum(s["reason"] == EMPTY_REASON for s in skipped),
        "corrupt_fraction": round(len(skipped) / max(total, 1), 5),
        "duplicate_rows": len(dups),
        "duplicate_groups": int(groups.ngroups),
        "duplicate_groups_across_patients": int((groups[cols.patient].nunique() > 1).sum()),
        "duplicate_groups_across_source_splits": int((groups["source_split"].nunique() > 1).sum()),
        "image_shape": [cfg.height, cfg.width],
        "resize": cfg.resize,
    }


def _check_corrupt(skipped: list[dict[str, Any]], total: int, limit: float, listing: Path) -> None:
    """One error for all the images skipped, once more of them than `limit` (a fraction):
    how many, of which kind, and the file that lists each with its reason."""
    n_bad = len(skipped)
    if total and n_bad / total > limit:
        empty = sum(s["reason"] == EMPTY_REASON for s in skipped)
        kinds = f" ({empty} empty, {n_bad - empty} undecodable)" if empty else ""
        raise TooManyCorruptError(
            f"{n_bad} of {total} images ({n_bad / total:.2%}) could not be decoded{kinds}, "
            f"more than preprocess.max_corrupt_fraction = {limit:.2%}; they are listed in "
            f"{listing}"
        )


def open_cache(cache_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """The memory-mapped image array and the index, as training and evaluation read them.

    Both are checked first (header against file size, index rows against the images), so a
    truncated or foreign cache is one line saying to rebuild it, not a traceback from mmap."""
    cache_dir = Path(cache_dir)
    images = _open_images(cache_dir / IMAGES)
    return images, _read_index(cache_dir / INDEX, len(images), cache_dir / SKIPPED)


def _broken(path: Path, reason: str) -> BrokenCacheError:
    reason = " ".join(reason.split())  # one line, whatever the library's message held
    return BrokenCacheError(
        f"{path} is truncated or not this project's cache ({reason}); "
        "re-run `olives stage preprocess` (or `dvc repro preprocess`)"
    )


def _open_images(path: Path) -> np.ndarray:
    """`images.npy` memory-mapped, once its header says uint8 images x height x width and
    the file holds exactly the bytes that header announces."""
    if not path.exists():
        raise BrokenCacheError(f"{path}: not found; run `olives stage preprocess` first")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy version {version} is not one this project writes")
            offset = handle.tell()
    except (OSError, ValueError) as exc:
        raise _broken(path, f"not a readable .npy file: {exc}") from None
    if dtype != np.uint8 or len(shape) != 3 or fortran:
        order = "Fortran" if fortran else "C"
        raise _broken(path, f"{dtype} array of shape {shape} in {order} order, not uint8 images")
    need, size = offset + math.prod(shape), path.stat().st_size
    if size != need:
        raise _broken(path, f"{size} bytes on disk, its header {shape} needs {need}")
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise _broken(path, str(exc)) from None


def _read_index(path: Path, n_images: int, skipped: Path) -> pd.DataFrame:
    """`index.parquet`, whose rows must point into the images: every image slot is either a
    row of the index or a line of `skipped.csv` (when that listing is there)."""
    if not path.exists():
        raise BrokenCacheError(f"{path}: not found; run `olives stage preprocess` first")
    try:
        index = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise _broken(path, f"not a readable parquet file: {exc}") from None
    rows = index.get("row")
    if rows is None or not pd.api.types.is_integer_dtype(rows):
        raise _broken(path, "no integer 'row' column")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_images or not rows.is_unique):
        raise _broken(path, f"its rows do not all point to distinct images of the {n_images}")
    n_skipped = _count_rows(skipped) if skipped.is_file() else n_images - len(index)
    if len(index) + n_skipped != n_images:
        raise _broken(
            path, f"{len(index)} rows + {n_skipped} skipped for {n_images} images in {IMAGES}"
        )
    return index


def _count_rows(listing: Path) -> int:
    try:
        return len(pd.read_csv(listing))
    except (OSError, ValueError) as exc:
        raise _broken(listing, f"not a readable CSV file: {exc}") from None
