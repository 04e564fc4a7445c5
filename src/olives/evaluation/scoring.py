"""Core of `olives score SUBMISSION.csv LABELS.csv`: VIP Cup 2023 scoring of 0/1 decisions.

Both files use the VIP Cup layout: the first column is the image path (its header is free,
e.g. 'Path (Trial/Arm/Folder/Visit/Eye/Image Name)'), then one 0/1 column per biomarker.
Rows are matched by path (surrounding spaces, a leading '/' and '\\' vs '/' are ignored);
paths found in only one file are listed and the score uses the intersection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from olives.config import BIOMARKER_NAMES, BIOMARKERS
from olives.errors import InputError
from olives.evaluation.metrics import vip_phase1, vip_phase2
from olives.io import none_if_nan

_SHOWN_MISMATCHES = 5


class ScoreError(InputError, ValueError):
    """A submission or label file cannot be scored; the message names the file and row."""


@dataclass(frozen=True)
class ScoreResult:
    """VIP Cup scores of one submission against one label file."""

    submission: str
    labels: str
    label_names: tuple[str, ...]
    n_matched: int
    vip_phase1: float
    per_label_f1: dict[str, float | None]
    only_in_submission: list[str] = field(default_factory=list)
    only_in_labels: list[str] = field(default_factory=list)
    vip_phase2: float | None = None
    n_patients: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {
            "submission": self.submission,
            "labels": self.labels,
            "label_names": list(self.label_names),
            "n_matched": self.n_matched,
            "vip_phase1": self.vip_phase1,
            "vip_phase2": self.vip_phase2,
            "n_patients": self.n_patients,
            "per_label_f1": dict(self.per_label_f1),
            "only_in_submission": list(self.only_in_submission),
            "only_in_labels": list(self.only_in_labels),
        }

    def format(self) -> str:
        """A plain-text report: matching summary, per-biomarker F1 table, VIP Cup scores."""
        lines = [
            f"submission: {self.submission}",
            f"labels:     {self.labels}",
            f"matched images: {self.n_matched}",
        ]
        lines += _mismatch_lines("only in submission", self.only_in_submission)
        lines += _mismatch_lines("only in labels", self.only_in_labels)
        lines += ["", f"{'biomarker':<10} {'name':<34} {'F1':>7}"]
        for name in self.label_names:
            value = self.per_label_f1[name]
            shown = "n/a" if value is None else f"{value:.4f}"
            lines.append(f"{name:<10} {BIOMARKER_NAMES.get(name, ''):<34} {shown:>7}")
        lines += ["", f"VIP Cup phase 1 (macro-F1, images pooled): {self.vip_phase1:.4f}"]
        if self.vip_phase2 is not None:
            lines.append(
                f"VIP Cup phase 2 (per-image macro-F1, mean over {self.n_patients} patients): "
                f"{self.vip_phase2:.4f}"
            )
        return "\n".join(lines)


def _mismatch_lines(title: str, paths: list[str]) -> list[str]:
    if not paths:
        return []
    lines = [f"{title}: {len(paths)} (not scored)"]
    lines += [f"  {p}" for p in paths[:_SHOWN_MISMATCHES]]
    if len(paths) > _SHOWN_MISMATCHES:
        lines.append(f"  ... and {len(paths) - _SHOWN_MISMATCHES} more")
    return lines


def normalise_path(path: str) -> str:
    """The matching key of an image path: trimmed, '/' separators, no leading '/'."""
    return str(path).strip().replace("\\", "/").lstrip("/")


def read_vip_csv(path: Path, label_names: Sequence[str]) -> pd.DataFrame:
    """Read a VIP Cup CSV into an int8 frame indexed by normalised path, one column per label.

    Raises `ScoreError` naming the file and the column or row (as a 1-based file line) for a
    missing label column, an empty or non-0/1 value, or a path given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{path}: file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScoreError(f"{path}: not a readable CSV file: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    _check_columns(path, raw, label_names)
    keys = raw.iloc[:, 0].map(normalise_path)
    _check_paths(path, keys)
    values = {name: _label_column(path, raw, keys, name) for name in label_names}
    return pd.DataFrame(values, index=pd.Index(keys.to_numpy(), name="path"))


def _check_columns(path: Path, raw: pd.DataFrame, label_names: Sequence[str]) -> None:
    if raw.shape[1] == 0 or raw.columns[0] in label_names:
        raise ScoreError(
            f"{path}: the first column must hold the image path, got columns {list(raw.columns)}"
        )
    missing = [name for name in label_names if name not in raw.columns]
    if missing:
        raise ScoreError(
            f"{path}: missing label column(s) {', '.join(map(repr, missing))}; "
            f"columns are {list(raw.columns)}"
        )
    if raw.shape[0] == 0:
        raise ScoreError(f"{path}: no data rows")


def _check_paths(path: Path, keys: pd.Series) -> None:
    empty = np.flatnonzero(keys.to_numpy() == "")
    if empty.size:
        raise ScoreError(f"{path}: line {empty[0] + 2}: empty image path")
    duplicated = keys[keys.duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        lines = [str(i + 2) for i in np.flatnonzero(keys.to_numpy() == first)]
        raise ScoreError(
            f"{path}: duplicate path '{first}' on lines {', '.join(lines)} "
            f"({duplicated.nunique()} duplicated path(s) in all)"
        )


def _label_column(path: Path, raw: pd.DataFrame, keys: pd.Series, name: str) -> np.ndarray:
    """One label column as int8 0/1; '1', '1.0' and ' 1' are accepted, anything else is not."""
    text = raw[name].str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isin(numbers, (0.0, 1.0)))
    if bad.size:
        i = bad[0]
        shown = "empty" if text.iloc[i] == "" else repr(text.iloc[i])
        raise ScoreError(
            f"{path}: line {i + 2} ('{keys.iloc[i]}'), column '{name}': value "
            f"{shown} is not 0 or 1 ({bad.size} bad value(s) in this column)"
        )
    return numbers.astype(np.int8)


def patient_from_path(path: str, part: int) -> str:
    """Component `part` of a normalised path: the VIP Cup test paths 'RECOVERY/OCT/01-037/...'
    name the patient at part 2, as the organisers' phase-2 script does."""
    parts = normalise_path(path).split("/")
    if part >= len(parts):
        raise ScoreError(f"path '{path}' has no component {part} to read the patient from")
    return parts[part]


def score_files(
    submission: Path,
    labels: Path,
    label_names: Sequence[str] = BIOMARKERS,
    patient_part: int | None = None,
) -> ScoreResult:
    """Score a VIP Cup submission CSV against a label CSV on the paths they share.

    `patient_part`, when given, is the index of the path component naming the patient (after
    the leading '/' is dropped); VIP Cup phase 2 is then reported too.
    """
    names = tuple(label_names)
    sub = read_vip_csv(Path(submission), names)
    ref = read_vip_csv(Path(labels), names)
    common = ref.index.intersection(sub.index, sort=False)
    if len(common) == 0:
        raise ScoreError(f"{submission}: no image path in common with {labels}")
    y_true = ref.loc[common, list(names)].to_numpy()
    y_pred = sub.loc[common, list(names)].to_numpy()
    per_label = f1_score(y_true, y_pred, average=None, zero_division=np.nan)
    phase2, n_patients = None, None
    if patient_part is not None:
        patients = np.array([patient_from_path(p, patient_part) for p in common])
        phase2, n_patients = vip_phase2(y_true, y_pred, patients), len(set(patients))
    return ScoreResult(
        submission=str(submission),
        labels=str(labels),
        label_names=names,
        n_matched=len(common),
        vip_phase1=vip_phase1(y_true, y_pred),
        per_label_f1=dict(zip(names, map(none_if_nan, per_label), strict=True)),
        only_in_submission=sorted(sub.index.difference(ref.index)),
        only_in_labels=sorted(ref.index.difference(sub.index)),
        vip_phase2=phase2,
        n_patients=n_patients,
    )
