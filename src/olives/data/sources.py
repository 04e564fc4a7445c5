"""The `download` stage's sources: Hugging Face hub, a local folder, or the synthetic generator.

Each writes `<raw_dir>/<split>/part-NNNNN.parquet` in the hub's `biomarker_detection` schema
(restricted to the configured label and clinical columns), streaming a bounded number of rows
at a time. The source is always explicit (`data.source`): nothing falls back silently.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from olives.config import LocalSource, Params
from olives.data.ids import normalise_id, subject_component, subject_from_path
from olives.data.schema import Columns, SchemaError, check_schema, clinical_problem, one_error
from olives.data.shards import ShardWriter
from olives.errors import InputError
from olives.io import file_kind, inside, none_if_nan, read_regular, reset_dir

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Offline sources: set `data.source: synthetic` (the embedded default generator) or "
    "`data.source: local` with `data.local.path` pointing at an ImageFolder (images + "
    "metadata.csv) or a folder of parquet files already downloaded from the hub."
)


class SourceError(InputError, RuntimeError):
    """A source could not be read: unreachable hub, missing folder, bad table."""


Row = tuple[str, "dict[str, Any] | InputError", str]  # split, row (or why it is bad), where
PRESENT, MISSING, EMPTY = "present", "missing", "empty"  # what a listed file is found to be


@dataclass
class Listed:
    """The listed files a local folder lacks or holds empty, for the download report."""

    missing: list[dict[str, Any]] = field(default_factory=list)
    empty: list[dict[str, Any]] = field(default_factory=list)


def download(params: Params) -> dict[str, Any]:
    """Fetch `params.data.source` into `params.data.raw_dir`; return per-split counts.

    Rows are written to a sibling `.partial` folder that replaces `raw_dir` only on success,
    so a failed download (hub unreachable, bad table) never destroys the previous data."""
    cfg = params.data
    cols = Columns.from_params(params)
    final = Path(cfg.raw_dir)
    raw_dir = reset_dir(final.with_name(final.name + ".partial"))
    listed = Listed()
    try:
        _fetch(params, cols, raw_dir, listed)
        derived = derive_patients(raw_dir, cols)
        info = describe_raw(raw_dir, cols)
    except BaseException:
        shutil.rmtree(raw_dir, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    raw_dir.rename(final)
    info["source"] = cfg.source
    if derived:
        info["patients_from_paths"] = derived
    for key, files in (("missing_files", listed.missing), ("empty_files", listed.empty)):
        if files:
            info[key] = {"count": len(files), "first": files[:20]}
    return info


def _fetch(params: Params, cols: Columns, raw_dir: Path, listed: Listed) -> None:
    cfg = params.data
    if cfg.source == "synthetic":
        from olives.data import synthetic

        synthetic.generate(
            cfg.synthetic, raw_dir, seed=params.seed, include_unlabeled=cfg.include_unlabeled
        )
        check_clinical_shards(raw_dir, cols)
    elif cfg.source == "huggingface":
        write_splits(
            huggingface_rows(cfg.huggingface, cols),
            raw_dir,
            cols,
            cfg.include_unlabeled,
            cfg.huggingface.shard_rows,
        )
    elif cfg.source == "local":
        write_splits(
            local_rows(
                Path(cfg.local.path),
                cols,
                cfg.local.split_column,
                listed,
                max_missing=cfg.local.max_missing_fraction,
            ),
            raw_dir,
            cols,
            cfg.include_unlabeled,
            shard_rows=500,
        )
    else:  # pragma: no cover - the config's Literal already rejects it
        raise SourceError(f"unknown data.source {cfg.source!r}")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_splits(
    rows: Iterable[Row],
    raw_dir: Path,
    cols: Columns,
    include_unlabeled: bool,
    shard_rows: int,
) -> dict[str, int]:
    """Stream `(split, row, where)` into one ShardWriter per split; unlabeled rows are dropped
    unless `include_unlabeled` (rows not kept are not stored at all). Every row is checked
    first: labels 0, 1 or blank, ids integral or text (`where` names the row in errors). A bad
    row does not stop the stream: every problem of the source is raised at the end, at once."""
    writers: dict[str, ShardWriter] = {}
    dropped = 0
    problems: list[InputError] = []
    for split, row, where in rows:
        if isinstance(row, InputError):  # the source found the row bad (an unreadable file)
            problems.append(row)
            continue
        row, found = _checked(row, cols, where)
        if found:
            problems.extend(found)
            continue
        if not include_unlabeled and not cols.is_labelled(row):
            dropped += 1
            continue
        if split not in writers:
            writers[split] = ShardWriter(raw_dir / split, features_for(row, cols), shard_rows)
        writer = writers[split]
        found = _id_type_problems(row, cols, writer, where)
        if found:
            problems.extend(found)
            continue
        writer.write({name: row.get(name) for name in writer.schema.names})
    if problems:
        raise one_error(problems, "problems in the source's rows")
    for writer in writers.values():
        writer.close()
    if not writers:
        raise SourceError("the source delivered no row to keep (all unlabeled?)")
    return {split: w.rows_written for split, w in writers.items()} | {"dropped": dropped}


def checked_row(row: dict[str, Any], cols: Columns, where: str) -> dict[str, Any]:
    """Labels in {0, 1, blank}; clinical values blank or plausible; ids as ints (integral
    numbers) or text. Every hub and local row passes here (`_checked`) before it is stored."""
    row, problems = _checked(row, cols, where)
    if problems:
        raise one_error(problems, f"problems in {where}")
    return row


def _checked(row: dict[str, Any], cols: Columns, where: str) -> tuple[dict[str, Any], list]:
    """`checked_row`'s row and every problem found in it (not only the first)."""
    problems = [
        SchemaError(f"{where}: label '{name}' is {value!r}; expected 0, 1 or blank")
        for name, value in ((n, row.get(n)) for n in cols.labels)
        if not _blank(value) and (isinstance(value, bool) or value not in (0, 1))
    ]
    problems += clinical_problems(row, cols, where)
    row = dict(row)
    for name in cols.ids:
        if name == cols.patient or row.get(name) is not None:
            try:
                row[name] = normalise_id(row.get(name), name, where)
            except SchemaError as exc:
                problems.append(exc)
    return row, problems


def clinical_problems(row: dict[str, Any], cols: Columns, where: str) -> list[SchemaError]:
    """A clinical value reaches the model as a feature: an impossible one (BCVA 1e308, CST
    -500, inf) is refused here, naming the row, rather than scaled into training."""
    problems = []
    for name in cols.clinical:
        value = row.get(name)
        if _blank(value):
            continue  # missing: imputed from the training split
        try:
            problem = clinical_problem(name, float(value))
        except (TypeError, ValueError):
            problem = f"{name} is {value!r}, not a number"
        if problem:
            problems.append(SchemaError(f"{where}: column {problem}"))
    return problems


def check_clinical(row: dict[str, Any], cols: Columns, where: str) -> None:
    """`clinical_problems` as one error."""
    problems = clinical_problems(row, cols, where)
    if problems:
        raise one_error(problems, f"problems in {where}")


def check_clinical_shards(raw_dir: Path, cols: Columns) -> None:
    """The synthetic generator writes its shards itself, not through `checked_row`: its
    clinical values are checked here, reading those columns alone (all rows, then one error)."""
    problems: list[InputError] = []
    for file in sorted(raw_dir.glob("*/*.parquet")):
        names = [c for c in cols.clinical if c in pq.read_schema(file).names]
        rows = pq.read_table(file, columns=names).to_pylist()
        for number, row in enumerate(rows):
            where = f"synthetic {file.parent.name}/{file.name} row {number}"
            problems += clinical_problems(row, cols, where)
    if problems:
        raise one_error(problems, "implausible clinical values in the synthetic shards")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def features_for(row: dict[str, Any], cols: Columns) -> Any:
    """The hub schema, with text id columns when this source's ids are text."""
    patient = "string" if isinstance(row[cols.patient], str) else "int64"
    eye = "string" if cols.eye and isinstance(row.get(cols.eye), str) else "float64"
    return cols.features(patient, eye)


def _id_type_problems(
    row: dict[str, Any], cols: Columns, writer: ShardWriter, where: str
) -> list[SchemaError]:
    """An id that is text where the split's first row had a number, or the reverse."""
    problems = []
    for name in cols.ids:
        value, want = row.get(name), writer.schema.field(name).type
        if value is not None and isinstance(value, str) != (want == pa.string()):
            kind = "text" if isinstance(value, str) else "a number"
            problems.append(
                SchemaError(f"{where}: column '{name}' is {kind} ({value!r}) unlike earlier rows")
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------


HUB_LOGGERS = ("datasets", "huggingface_hub")
PROBE_TIMEOUT_S = 10.0  # one request; a hub that answers at all answers well within this


def huggingface_rows(cfg: Any, cols: Columns) -> Iterator[Row]:
    """Stream rows of each split from the hub (or a local folder in the hub's layout).

    Streaming keeps memory bounded: the 15 GB config never sits in memory or in the
    `datasets` cache. Images stay encoded (`decode=False`): preprocess decodes them once.
    """
    import datasets

    one_handler_for_hub_logs()
    check_hub_reachable(cfg.repo_id, cfg.revision)
    for split in cfg.splits:
        try:
            stream = datasets.load_dataset(
                cfg.repo_id, cfg.config, split=split, revision=cfg.revision, streaming=True
            )
        except ConnectionError as exc:
            raise SourceError(
                f"Couldn't reach '{cfg.repo_id}' on the Hugging Face hub ({exc}). " + OFFLINE_HINT
            ) from exc
        except (FileNotFoundError, ValueError) as exc:
            raise SourceError(
                f"data.huggingface: cannot load {cfg.repo_id!r} config "
                f"{cfg.config!r} split {split!r}: {exc}"
            ) from exc
        where = f"{cfg.repo_id} [{cfg.config}/{split}]"
        check_schema(stream.features.arrow_schema, cols.features(), where, cols.ids)
        stream = stream.cast_column(cols.image, datasets.Image(decode=False))
        for i, row in enumerate(stream):
            yield split, row, f"{where} row {i}"


def one_handler_for_hub_logs() -> None:
    """`datasets` and `huggingface_hub` give their root loggers a stderr handler of their own
    and still propagate to the root logger: under the command line's handler each of their
    warnings was printed twice. Theirs go once the root logger has a handler."""
    if not logging.getLogger().handlers:
        return
    for name in HUB_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            if type(handler) is logging.StreamHandler:
                library.removeHandler(handler)


def check_hub_reachable(repo_id: str, revision: str | None) -> None:
    """One request to the hub's API, without retries, before `load_dataset`: unreachable
    (offline, `HF_HUB_OFFLINE=1`, a closed `HF_ENDPOINT`), the library retried each file with
    back-off for 25-45 s and a dozen warnings before the same failure. Any answer from the hub
    (even an error: gated, unknown revision) lets `load_dataset` go on and report as before;
    a folder in the hub's layout is not probed."""
    if Path(repo_id).is_dir():
        return
    from huggingface_hub import HfApi, constants

    try:
        HfApi().dataset_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # the HTTP client's errors have no common public base
        if not _unreachable(exc):
            return
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceError(
            f"Couldn't reach '{repo_id}' on the Hugging Face hub at {constants.ENDPOINT} "
            f"({reason}). " + OFFLINE_HINT
        ) from None


def _unreachable(exc: Exception) -> bool:
    """A connection that failed or timed out (offline mode included), not a hub's answer."""
    if isinstance(exc, (ConnectionError, TimeoutError)):  # OfflineModeIsEnabled among them
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "Timeout"})


# ---------------------------------------------------------------------------------------------
# Local folders
# ---------------------------------------------------------------------------------------------


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
    text = "" if _blank(name) else str(name)
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
    if _blank(value):
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


# ---------------------------------------------------------------------------------------------
# Patients from image paths, and the data report
# ---------------------------------------------------------------------------------------------


def derive_patients(raw_dir: Path, cols: Columns) -> dict[str, dict[str, Any]]:
    """For each split whose patient id is constant while its image paths name subjects (the
    hub's RECOVERY test split), rewrite the shards with the subject read from the paths (see
    `olives.data.ids`). Returns, per such split, the path component used and the patients."""
    derived = {}
    for split_dir in sorted(p for p in raw_dir.iterdir() if p.is_dir()):
        files = sorted(split_dir.glob("*.parquet"))
        read = [f"{cols.image}.path", cols.patient]
        table = pd.concat([pq.read_table(f, columns=read).to_pandas() for f in files])
        if table[cols.patient].nunique() != 1 or len(table) < 2:
            continue
        component = subject_component(table["path"].astype(str).tolist())
        if component is None:
            continue
        for file in files:
            _rewrite_patients(file, cols, component)
        subjects = {subject_from_path(p, component) for p in table["path"].astype(str)}
        derived[split_dir.name] = {"path_component": component, "patients": len(subjects)}
    return derived


def _rewrite_patients(file: Path, cols: Columns, component: int) -> None:
    table = pq.read_table(file)
    paths = table.column(cols.image).combine_chunks().field("path").to_pylist()
    ids = pa.array([subject_from_path(p, component) for p in paths], pa.string())
    index = table.schema.get_field_index(cols.patient)
    table = table.set_column(index, pa.field(cols.patient, pa.string()), ids)
    eye = table.schema.field(cols.eye).type if cols.eye else None
    eye_type = "string" if eye is not None and pa.types.is_string(eye) else "float64"
    schema = cols.features("string", eye_type).arrow_schema
    pq.write_table(table.cast(schema), file)


def describe_raw(raw_dir: Path, cols: Columns) -> dict[str, Any]:
    """Rows, labelled rows, patients and eyes per split; flags a constant Patient_ID
    (the hub's test split has one), since per-patient metrics need real patient IDs."""
    report: dict[str, Any] = {"splits": {}}
    for split_dir in sorted(p for p in raw_dir.iterdir() if p.is_dir()):
        # Never the image bytes: only the path field of the Image struct.
        read = [f"{cols.image}.path", cols.patient, *cols.labels] + ([cols.eye] if cols.eye else [])
        frames = []
        for file in sorted(split_dir.glob("*.parquet")):
            check_schema(pq.read_schema(file), cols.features(), str(file), cols.ids)
            frames.append(pq.read_table(file, columns=read).to_pandas())
        table = pd.concat(frames, ignore_index=True)
        labelled = table[list(cols.labels)].notna().all(axis=1)
        info = {
            "rows": len(table),
            "images": int(table["path"].nunique()),
            "labelled_rows": int(labelled.sum()),
            "unlabeled_rows": int((~labelled).sum()),
            "patients": int(table[cols.patient].nunique()),
            "eyes": int(table[cols.eye].nunique()) if cols.eye else None,
            "prevalence": {
                name: round(float(table.loc[labelled, name].mean()), 4) for name in cols.labels
            }
            if labelled.any()
            else {},
            "warnings": [],
        }
        if info["patients"] == 1 and len(table) > 1:
            info["warnings"].append(
                f"'{cols.patient}' is constant ({table[cols.patient].iloc[0]}) in split "
                f"'{split_dir.name}': per-patient metrics and patient bootstrap are not "
                "meaningful for it"
            )
        report["splits"][split_dir.name] = info
    return report
