"""The `download` stage's sources: Hugging Face hub, a local folder, or the synthetic generator.

Each writes `<raw_dir>/<split>/part-NNNNN.parquet` in the hub's `biomarker_detection` schema
(restricted to the configured label and clinical columns), streaming a bounded number of rows
at a time. The source is always explicit (`data.source`): nothing falls back silently.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from olives.config import Params
from olives.data.hub import (
    huggingface_rows,
)
from olives.data.ids import normalise_id, subject_component, subject_from_path
from olives.data.local import local_rows
from olives.data.rows import Listed, Row, SourceError, blank
from olives.data.schema import Columns, SchemaError, check_schema, clinical_problem, one_error
from olives.data.shards import ShardWriter
from olives.errors import InputError
from olives.io import reset_dir

log = logging.getLogger(__name__)


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
        if not blank(value) and (isinstance(value, bool) or value not in (0, 1))
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
        if blank(value):
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
