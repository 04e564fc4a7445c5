"""`data.source: local`: rows of an ImageFolder (images + metadata.csv) or of a folder of
parquet files in the hub's schema. A path from metadata.csv stays inside its folder; missing
and empty files are counted and listed, never silently dropped."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from olives.config import LocalSource
from olives.data.rows import EMPTY, MISSING, OFFLINE_HINT, PRESENT, Listed, Row, SourceError, blank
from olives.data.schema import Columns, SchemaError, check_schema, one_error
from olives.errors import InputError
from olives.io import file_kind, inside, none_if_nan, read_regular

log = logging.getLogger(__name__)


def local_rows(
    path: Path,
    cols: Columns,
    split_column: str | None,
    listed: Listed | None = None,
    max_missing: float = LocalSource.max_missing_fraction,
) -> Iterator[Row]:
    """Rows of an ImageFolder (`metadata.csv` + images) or of a folder of parquet files."""
    if not path.is_dir():
        raise SourceError(f"data.local.path: folder not found: {path}. " + OFFLINE_HINT)
    metadata = path / "metadata.csv"
    if metadata.is_file():
        yield from imagefolder_rows(
            path, metadata, cols, split_column, listed, max_missing=max_missing
        )
        return
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise SourceError(f"data.local.path: {path} holds neither metadata.csv nor *.parquet")
    refused = [p for p in (_parquet_problem(f, cols) for f in files) if p]
    if refused:
        raise one_error(refused, f"parquet files under {path} refused")
    for file in files:
        yield from parquet_rows(file, cols, split_column, path)


def _parquet_problem(file: Path, cols: Columns) -> InputError | None:
    """Why `file` cannot be read as a shard of the hub schema (a FIFO would block the
    reader; a footer is no table of ours), or None; checked for every file before any row."""
    try:
        regular = stat.S_ISREG(file.stat().st_mode)
    except OSError as exc:  # a broken link, a link loop
        return SourceError(f"data.local.path: {file}: {exc.strerror or exc}")
    if not regular:
        return SourceError(f"data.local.path: {file} is not a regular file")
    try:
        check_schema(pq.ParquetFile(file).schema_arrow, cols.features(), str(file), cols.ids)
    except SchemaError as exc:
        return exc
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return SourceError(f"data.local.path: {file} is not a readable parquet file ({exc})")
    return None


def imagefolder_rows(
    root: Path,
    metadata: Path,
    cols: Columns,
    split_column: str | None,
    listed: Listed | None = None,
    max_missing: float = LocalSource.max_missing_fraction,
) -> Iterator[Row]:
    """Rows of `metadata.csv`. Ids are read as text (leading zeros and `01-037` survive;
    plain integers become ints). Every `file_name` must stay inside `root` and name a regular
    file (all refused names are one error). A listed image that is absent is not stored but
    recorded in `listed` with its line and path, and more than `max_missing` (a fraction) of
    them stop the stage (checked before any image is read). An empty image is stored as it
    is (0 bytes): `preprocess` skips and lists it like any undecodable image, under
    `preprocess.max_corrupt_fraction`."""
    table = read_metadata(metadata, cols, split_column)
    files = _list_files(root, metadata, table["file_name"])
    lines = {
        state: [(i + 2, p) for i, (p, s) in enumerate(files) if s == state]
        for state in (MISSING, EMPTY)
    }
    _check_missing(lines[MISSING], len(table), root, metadata, max_missing)
    _warn_empty(lines[EMPTY], len(table), root, metadata)
    if listed is not None:
        listed.missing.extend({"line": n, "path": str(p)} for n, p in lines[MISSING])
        listed.empty.extend({"line": n, "path": str(p)} for n, p in lines[EMPTY])
    for i, rec in enumerate(table.to_dict("records")):
        path, state = files[i]
        if state != MISSING:
            yield _folder_row(rec, path, state, cols, split_column, f"{metadata} line {i + 2}")


def _folder_row(
    rec: dict[str, Any],
    path: Path,
    state: str,
    cols: Columns,
    split_column: str | None,
    where: str,
) -> Row:
    """One `metadata.csv` line as a row, or as the reason it is bad (stream goes on)."""
    split = str(rec[split_column]) if split_column else "train"
    if split not in ("train", "test"):
        return (
            split,
            SchemaError(f"{where}: {split_column}={split!r} is not 'train' or 'test'"),
            where,
        )
    try:
        data = b"" if state == EMPTY else _read_listed(path, where)
    except SourceError as exc:
        return split, exc, where
    row = {name: none_if_nan(rec.get(name)) for name in (*cols.labels, *cols.clinical)}
    row[cols.image] = {"bytes": data, "path": str(rec["file_name"])}
    for name in (c for c in cols.ids if c):
        row[name] = _id_text(rec.get(name))
    return split, row, where


def read_metadata(metadata: Path, cols: Columns, split_column: str | None) -> pd.DataFrame:
    """`metadata.csv` with its required columns; ids and file names read as text."""
    text = {c: str for c in (*cols.ids, "file_name") if c}
    table = pd.read_csv(metadata, dtype=text)
    need = ["file_name", *cols.labels, *cols.clinical, cols.patient]
    if split_column:
        need.append(split_column)
    absent = [c for c in need if c not in table.columns]
    if absent:
        raise SchemaError(f"{metadata}: missing column(s) {', '.join(map(repr, absent))}")
    _check_numeric(table, [*cols.labels, *cols.clinical], metadata)
    return table


def _list_files(root: Path, metadata: Path, names: Iterable[Any]) -> list[tuple[Path, str]]:
    """Each listed file and whether it is present, missing or empty; every refused name
    (leaving `root`, not a regular file) in one error."""
    files, refused = [], []
    for i, name in enumerate(names):
        try:
            files.append(_listed_file(root, name, f"{metadata} line {i + 2}"))
        except SourceError as exc:
            refused.append(exc)
    if refused:
        raise one_error(refused, f"files listed in {metadata} refused")
    return files


def _listed_file(root: Path, name: Any, where: str) -> tuple[Path, str]:
    """`root/name` and whether it is PRESENT, MISSING or EMPTY. A name that is absolute or
    leads outside `root` (by `..` or a link) would copy any file of the disk into `data/raw`,
    and a FIFO or device would block or never end: both are errors naming the line."""
    text = "" if blank(name) else str(name)
    try:
        path = inside(root, text)
        info = path.stat()
    except InputError as exc:
        raise SourceError(f"{where}: file_name: {exc}") from None
    except (FileNotFoundError, NotADirectoryError):
        return path, MISSING
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop; a NUL in the name
        raise SourceError(f"{where}: file_name {text!r}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(
            f"{where}: file_name {text!r} is {file_kind(info.st_mode)}, not a regular file"
        )
    if not os.access(path, os.R_OK):
        raise SourceError(f"{where}: file_name {text!r} cannot be read (permission denied)")
    return path, EMPTY if info.st_size == 0 else PRESENT


def _read_listed(path: Path, where: str) -> bytes:
    """The bytes of a listed file (`olives.io.read_regular`: a FIFO put in its place after
    the listing cannot hang the stage)."""
    try:
        return read_regular(path)
    except InputError as exc:
        raise SourceError(f"{where}: {exc}") from None


def _first(lines: list[tuple[int, Path]], root: Path) -> str:
    names = [str(path.relative_to(root)) for _, path in lines[:5]]
    return ", ".join(names) + (", ..." if len(lines) > len(names) else "")


def _check_missing(
    absent: list[tuple[int, Path]], listed: int, root: Path, metadata: Path, most: float
) -> None:
    """One warning for absent files; more than the fraction `most` of them is an error
    (a mistyped or half-copied folder), so nobody trains on a fraction of the data unawares."""
    if not absent:
        return
    first = _first(absent, root)
    text = f"{len(absent)} of {listed} files listed in {metadata} are missing (first: {first})"
    if len(absent) / listed > most:
        raise SourceError(
            f"data.local.path: {text}, more than data.local.max_missing_fraction ({most:.0%}); "
            "check the folder"
        )
    log.warning("data.local.path: %s; they are skipped and listed in the download report", text)


def _warn_empty(empty: list[tuple[int, Path]], listed: int, root: Path, metadata: Path) -> None:
    """One warning for empty (0-byte) images: they are kept for `preprocess` to count."""
    if empty:
        log.warning(
            "data.local.path: %d of %d files listed in %s are empty (first: %s); preprocess "
            "skips them with the undecodable ones (preprocess.max_corrupt_fraction) and lists "
            "them in its skipped.csv",
            len(empty),
            listed,
            metadata,
            _first(empty, root),
        )


def _id_text(value: Any) -> int | str | None:
    """A text id from a CSV: a plain integer (no sign, no leading zero) becomes an int."""
    if blank(value):
        return None
    text = str(value).strip()
    return int(text) if text.isdigit() and str(int(text)) == text else text


def parquet_rows(
    file: Path, cols: Columns, split_column: str | None, root: Path
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Parquet files: split from `split_column`, else from a `train/` or `test/` folder or
    a `train-*`/`test-*` file name (the hub layout), else 'train'."""
    reader = pq.ParquetFile(file)
    check_schema(reader.schema_arrow, cols.features(), str(file), cols.ids)
    split = _split_from_path(file.relative_to(root))
    number = 0
    for batch in reader.iter_batches(batch_size=64, use_threads=False):
        for row in batch.to_pylist():
            yield (str(row[split_column]) if split_column else split), row, f"{file} row {number}"
            number += 1


def _split_from_path(relative: Path) -> str:
    for part in (*relative.parent.parts, relative.name):
        for name in ("test", "train"):
            if part == name or part.startswith(f"{name}-") or part.startswith(f"{name}_"):
                return name
    return "train"


def _check_numeric(table: pd.DataFrame, columns: list[str], where: Path) -> None:
    """Every cell of `columns` that is not a number, in one error."""
    problems: list[InputError] = []
    for name in columns:
        values = pd.to_numeric(table[name], errors="coerce")
        bad = values.isna() & table[name].notna()
        for index in bad.to_numpy().nonzero()[0]:
            problems.append(
                SchemaError(
                    f"{where}: column '{name}' line {index + 2}: "  # header is line 1
                    f"{table[name].iloc[index]!r} is not a number"
                )
            )
    if problems:
        raise one_error(problems, f"cells of {where} are not numbers")
