"""The Hugging Face `gOLIVES/OLIVES_Dataset` `biomarker_detection` schema and its checks.

Every source (hub, local folder, synthetic generator) writes `data/raw/<split>/*.parquet` in
this schema, so the stages after `download` never need to know where data came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from olives.config import BIOMARKERS, Params
from olives.errors import InputError

if TYPE_CHECKING:  # `datasets` is imported only where rows are written or checked
    from datasets import Features


# Plausible clinical values (docs/serving.md, "Security and limits"): BCVA in ETDRS
# letters, 0-100 by the chart (OLIVES: 27-100); central subfield thickness in micrometres
# (OLIVES: 151-723; macular holes go thinner, severe oedema thicker). Other clinical columns
# must be finite.
CLINICAL_RANGES: dict[str, tuple[float, float]] = {"BCVA": (0.0, 100.0), "CST": (50.0, 1500.0)}


def clinical_problem(name: str, value: float | None) -> str | None:
    """Why a clinical value may not reach the model, or None when it may (None, a missing
    value, is imputed as in training)."""
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} is {value}, not a finite number"
    low, high = CLINICAL_RANGES.get(name, (-math.inf, math.inf))
    if not low <= value <= high:
        return f"{name} = {value:g} is outside its plausible range {low:g}-{high:g}"
    return None


class SchemaError(InputError, ValueError):
    """Raw data lacks a column or has one of the wrong type."""


SHOWN = 5  # problems spelled out in one error; the count says how many there are in all


def one_error(problems: Sequence[InputError], what: str) -> InputError:
    """Every problem of a run as one error (of the first one's class): a single problem as
    it is, several as their count and the first `SHOWN`, so a user fixes them all at once
    instead of meeting them one run at a time."""
    if len(problems) == 1:
        return problems[0]
    first = "; ".join(str(p) for p in problems[:SHOWN])
    more = f"; ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return type(problems[0])(f"{len(problems)} {what}: {first}{more}")


@dataclass(frozen=True)
class Columns:
    """The column names every stage agrees on, taken from the shared params keys."""

    image: str
    labels: tuple[str, ...]
    clinical: tuple[str, ...]
    patient: str
    eye: str | None

    @classmethod
    def from_params(cls, params: Params) -> Columns:
        return cls(
            params.image_column,
            tuple(params.labels),
            tuple(params.clinical),
            params.patient_column,
            params.eye_column,
        )

    def features(self, patient_type: str = "int64", eye_type: str = "float64") -> Features:
        return olives_features(
            self.labels, self.clinical, self.image, self.patient, self.eye, patient_type, eye_type
        )

    @property
    def ids(self) -> tuple[str, ...]:
        """The id columns, which may hold integers, integral floats or text."""
        return (self.patient, self.eye) if self.eye else (self.patient,)

    def is_labelled(self, row: dict[str, Any]) -> bool:
        """A row is labelled when none of its label cells is null."""
        return all(row.get(name) is not None and not pd.isna(row[name]) for name in self.labels)


def olives_features(
    labels: Sequence[str] = BIOMARKERS,
    clinical: Sequence[str] = ("BCVA", "CST"),
    image_column: str = "Image",
    patient_column: str = "Patient_ID",
    eye_column: str | None = "Eye_ID",
    patient_type: str = "int64",
    eye_type: str = "float64",
) -> Features:
    """Features in the hub's column order: Image, labels, clinical, Eye_ID, Patient_ID. The
    hub's id types by default; `"string"` for sources whose ids are text."""
    from datasets import Features, Image, Value

    cols: dict = {image_column: Image()}
    cols.update({name: Value("float64") for name in labels})
    cols.update({name: Value("float64") for name in clinical})
    if eye_column:
        cols[eye_column] = Value(eye_type)
    cols[patient_column] = Value(patient_type)
    return Features(cols)


def check_schema(
    schema: pa.Schema, expected: Features, where: str, ids: Sequence[str] = ()
) -> None:
    """Raise `SchemaError` naming every missing or mistyped column of `schema`. The `ids`
    columns may be integers, floats (integral values are checked row by row) or text."""
    want = expected.arrow_schema
    problems = []
    for name in want.names:
        if name not in schema.names:
            problems.append(f"missing column '{name}'")
            continue
        got, need = schema.field(name).type, want.field(name).type
        if name in ids and _is_id_type(got):
            continue
        if not _compatible(got, need):
            problems.append(f"column '{name}' has type {got}, expected {need}")
    if problems:
        raise SchemaError(f"{where}: " + "; ".join(problems))


def _is_id_type(got: pa.DataType) -> bool:
    return (
        pa.types.is_integer(got)
        or pa.types.is_floating(got)
        or pa.types.is_string(got)
        or pa.types.is_large_string(got)
    )


def _compatible(got: pa.DataType, need: pa.DataType) -> bool:
    """Exact match, or a lossless widening (int -> float64, large_binary -> binary ...)."""
    if got == need:
        return True
    if pa.types.is_struct(need):
        if not pa.types.is_struct(got):
            return False
        fields = {got.field(i).name: got.field(i).type for i in range(got.num_fields)}
        return all(
            need.field(i).name in fields
            and _compatible(fields[need.field(i).name], need.field(i).type)
            for i in range(need.num_fields)
        )
    if pa.types.is_floating(need):
        return pa.types.is_floating(got) or pa.types.is_integer(got) or pa.types.is_null(got)
    if pa.types.is_integer(need):
        return pa.types.is_integer(got)
    if pa.types.is_binary(need):
        return pa.types.is_binary(got) or pa.types.is_large_binary(got)
    if pa.types.is_string(need):
        return pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_null(got)
    return False
