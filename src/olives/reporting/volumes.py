"""Volume-level results: the unit a clinician decides on is a volume (patient x eye x visit; an
OLIVES volume is 49 B-scans), not a B-scan.

Which scans form a volume: the folder of the scan's image path (OLIVES and RECOVERY store one
volume per `.../<visit>/<eye>/` folder; the embedded generator one per `.../<visit>/vol<k>/`).
The visit is the name of the folder above it (`V1`, `W52`), ordered within each eye by its
number (`V1` < `V14`): visit 1 is the eye's first visit. A source whose paths have no folders,
or whose folders mix patients, has no volume ids, and the report says so.

Aggregation rule, per biomarker: a volume is positive when any of its B-scans is labelled
positive; its probability is the highest B-scan probability; it is called positive when that
probability reaches the biomarker's tuned threshold, i.e. when any B-scan is called positive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from olives.metrics import image_f1_scores


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: `V2` < `V14`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def volume_ids(predictions: pd.DataFrame, patient_column: str) -> pd.DataFrame | str:
    """`volume` and `visit` per scan, or the reason the scans cannot be grouped into volumes."""
    if "path" not in predictions or predictions["path"].isna().any():
        return "its scans have no image paths"
    parents = [PurePosixPath(str(p).replace("\\", "/")).parent for p in predictions["path"]]
    if any(str(p) in ("", ".") for p in parents):
        return "some image paths have no folder"
    ids = pd.DataFrame(
        {"volume": [str(p) for p in parents], "visit": [p.parent.name or p.name for p in parents]},
        index=predictions.index,
    )
    mixed = predictions.groupby(ids["volume"])[patient_column].nunique()
    if (mixed > 1).any():
        return f"folder {mixed[mixed > 1].index[0]} holds scans of several patients"
    return ids


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


def arrays(
    volumes: pd.DataFrame, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth, probability and decision matrices `[volumes, labels]`."""
    truth = volumes[list(labels)].to_numpy(dtype=np.float64)
    prob = volumes[[f"{n}_prob" for n in labels]].to_numpy(dtype=np.float64)
    pred = volumes[[f"{n}_pred" for n in labels]].to_numpy(dtype=np.int64)
    return truth, prob, pred


def group_scores(frame: pd.DataFrame, labels: Sequence[str], column: str) -> pd.DataFrame:
    """Per value of `column`: rows (`count`), mean per-row macro-F1 (the VIP phase-2 image
    score) and per-label accuracy; worst first (ties: the group's id)."""
    truth, _, pred = arrays(frame, labels)
    table = pd.DataFrame(
        {"group": frame[column].to_numpy(), "macro_f1": image_f1_scores(truth, pred)}
    )
    for j, name in enumerate(labels):
        table[f"{name}_accuracy"] = (truth[:, j] == pred[:, j]).astype(float)
    grouped = table.groupby("group", sort=True)
    out = grouped.mean()
    out.insert(0, "count", grouped.size())
    out = out.reset_index().sort_values(["macro_f1", "group"], kind="stable")
    return out.reset_index(drop=True)
