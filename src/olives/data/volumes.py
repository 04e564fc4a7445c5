"""Volumes: which B-scans form one volume, the unit a clinician decides on (patient x eye x
visit; an OLIVES volume is 49 B-scans), and how a volume's result follows from its B-scans. The
one rule for `olives predict --by volume` and the report (on `evaluate`'s predictions).

Which scans form a volume, first match wins:
1. an id the input states: a `volume` column (metadata.csv, parquet), a DICOM file (its frames
   are one volume), or the folder of a hub-layout image path (`parquet_volume`: OLIVES and
   RECOVERY store one volume per `.../<visit>/<eye>/` folder, the embedded generator one per
   `.../<visit>/vol<k>/`; the dataset stages and the report read their rows this way);
2. otherwise `volume_from`: `"file"` (the default for loose files): each file is a volume of its
   own, so a folder of unrelated scans is never pooled; `"folder"`: the user says that each
   folder holds one volume.
A path without a folder is a volume of its own under either rule (never volume "."); paths are
compared with `/`, so a Windows path names the same folder. A volume whose scans belong to
several patients is not a volume: `mixed_patients` names it and both users refuse it.

The visit of a folder volume is the name of the folder above it (`V1`, `W52`), ordered within
each eye by its number (`V1` < `V14`): visit 1 is the eye's first visit.

Aggregation, per biomarker: a volume is positive when any of its B-scans is labelled positive;
its probability is the highest B-scan probability; it is called positive when that probability
reaches the biomarker's tuned threshold, i.e. when any B-scan is called positive.

An eye is shown as the source gives it: `OD` / `OS` when its id is one or a folder of its path
is named so (OLIVES `.../V1/OD/`, RECOVERY `.../W0/OS/`, the synthetic `.../P1001/OS/V1/`),
else its id (the hub's numeric `Eye_ID` says nothing about the side).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from olives.data.ids import plain

VOLUME_FROM = ("file", "folder")
SIDES = ("OD", "OS")  # right eye, left eye


def _posix(path: str) -> PurePosixPath:
    return PurePosixPath(str(path).replace("\\", "/"))


def volume_of(path: str, volume_from: str = "file") -> str:
    """The volume of a scan at `path` that states no volume id (see the module docstring)."""
    if volume_from not in VOLUME_FROM:
        raise ValueError(f"volume_from must be one of {VOLUME_FROM}, not {volume_from!r}")
    posix = _posix(path)
    folder = str(posix.parent)
    return folder if volume_from == "folder" and folder not in ("", ".") else str(posix)


def parquet_volume(path: str) -> str:
    """A hub-layout row's volume: the folder of its image path (a bare name: the file)."""
    return volume_of(path, "folder")


def visit_of(volume: str) -> str:
    """A folder volume's visit: the folder above it (its own name when there is none)."""
    posix = _posix(volume)
    return posix.parent.name or posix.name


def mixed_patients(volumes: pd.Series, patients: pd.Series) -> str | None:
    """The reason these volumes are not volumes (one holds several patients), or None."""
    known = patients.notna()
    mixed = patients[known].groupby(volumes[known]).nunique()
    if (mixed > 1).any():
        return f"volume {mixed[mixed > 1].index[0]} holds scans of several patients"
    return None


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: `V2` < `V14`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def volume_ids(predictions: pd.DataFrame, patient_column: str) -> pd.DataFrame | str:
    """`volume` and `visit` per dataset row (the hub layout: `parquet_volume` of `path`), or the
    reason the rows cannot be grouped into volumes."""
    if "path" not in predictions or predictions["path"].isna().any():
        return "its scans have no image paths"
    volumes = [parquet_volume(p) for p in predictions["path"]]
    ids = pd.DataFrame(
        {"volume": volumes, "visit": [visit_of(v) for v in volumes]}, index=predictions.index
    )
    return mixed_patients(ids["volume"], predictions[patient_column]) or ids


def volume_table(
    predictions: pd.DataFrame, labels: Sequence[str], patient_column: str
) -> pd.DataFrame | str:
    """`aggregate_volumes` of hub-layout rows (`volume_ids`), or why there are no volumes."""
    ids = volume_ids(predictions, patient_column)
    return (
        ids if isinstance(ids, str) else aggregate_volumes(predictions, labels, patient_column, ids)
    )


def aggregate_volumes(
    predictions: pd.DataFrame, labels: Sequence[str], patient_column: str, ids: pd.DataFrame
) -> pd.DataFrame:
    """One row per volume: patient, eye, visit, visit order, scans, and per label the max of
    the truth, the probability and the decision (the module's rule)."""
    frame = predictions.assign(volume=ids["volume"], visit=ids["visit"])
    if "eye" not in frame:  # a source without eye ids: one eye per patient
        frame["eye"] = frame[patient_column]
    how: dict[str, str] = {patient_column: "first", "eye": "first", "visit": "first"}
    for label in labels:
        how |= {label: "max", f"{label}_prob": "max", f"{label}_pred": "max"}
    grouped = frame.groupby("volume", sort=True)
    volumes = grouped.agg(how)
    volumes.insert(3, "scans", grouped.size())
    order = volumes.groupby([patient_column, "eye"])["visit"].transform(_visit_order)
    volumes.insert(4, "visit_order", order.astype(int))
    return volumes.reset_index()


def _visit_order(visits: pd.Series) -> pd.Series:
    ranked = sorted(set(visits), key=natural_key)
    return visits.map({name: k + 1 for k, name in enumerate(ranked)})


def eye_side(path: str) -> str | None:
    """`OD` or `OS` when a component of `path` is named so (any case); None when none is, or
    both are."""
    found = {part.upper() for part in _posix(path).parts if part.upper() in SIDES}
    return found.pop() if len(found) == 1 else None


def eye_name(eye: Any, path: str = "") -> str:
    """How the report shows an eye: `OD` / `OS` when its id or its path says which, else the
    id as the source gives it (an integral float as an integer)."""
    side = str(eye).strip().upper()
    if side in SIDES:
        return side
    return eye_side(path) or str(plain(eye))
