"""Patient and eye ids as sources give them: integers (the hub's card), integral floats (the
hub's viewer, `Eye_ID`), or text (clinics' exports, hashed ids, RECOVERY's `01-037`).

An id is kept as the source wrote it: an integer stays an integer (so the hub schema's ids keep
working unchanged) and text stays text, never mangled. A float id must be integral. When one
column mixes integers and text (e.g. a split whose patients were read from image paths), every
id of it becomes text, the integers written as digits.

Patients from paths: the hub's `biomarker_detection` test split is reported to carry one
constant `Patient_ID`, while its image paths name the subject (`RECOVERY/OCT/01-037/W0/OS/..`).
`subject_component` finds the first path component (not the file name) that takes more than
one value, and `subject_from_path` reads it: the component of index 2 there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from olives.data.schema import SchemaError


def normalise_id(value: Any, column: str, where: str) -> int | str:
    """`value` as an int (integral numbers) or a stripped str; anything else is an error."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise SchemaError(f"{where}: column '{column}' has no id ({value!r})")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value) or not float(value).is_integer():
            raise SchemaError(f"{where}: column '{column}' is {value!r}, not an integral id")
        return int(value)
    text = str(value).strip()
    if not text:
        raise SchemaError(f"{where}: column '{column}' is empty")
    return text


def uniform(values: pd.Series) -> pd.Series:
    """One type per id column: integers (integral floats included) when every id is one,
    else text for all; missing ids stay missing."""
    ids = values.map(_plain)
    if ids.dropna().map(lambda v: isinstance(v, int)).all():
        return ids.astype("Int64") if ids.isna().any() else ids.astype(np.int64)
    return ids.map(lambda v: None if v is None else str(v)).astype(object)


def plain(value: Any) -> int | str:
    """A JSON-ready id (numpy ints as int, text as str)."""
    out = _plain(value)
    return str(value) if out is None else out


def _plain(value: Any) -> int | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value)


def subject_component(paths: Sequence[str]) -> int | None:
    """Index of the first directory component whose value varies across `paths` (None if no
    directory component varies: the paths do not name subjects)."""
    parts = [PurePosixPath(str(p).strip().lstrip("/")).parts[:-1] for p in paths]
    depth = min((len(p) for p in parts), default=0)
    for k in range(depth):
        if len({p[k] for p in parts}) > 1:
            return k
    return None


def subject_from_path(path: str, component: int) -> str:
    return PurePosixPath(str(path).strip().lstrip("/")).parts[component]
