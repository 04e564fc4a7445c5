"""The `split` stage: patient-level splits of the cache plus train-only statistics.

Kept apart from `preprocess` so that changing a split parameter (a k-fold index, a fraction)
never re-decodes images; it reads the index only, never a pixel. Duplicates are handled here
because they decide where rows may go: patients that share a byte-identical labelled image are
one group for the splitter (so the image cannot land in two splits), and training copies of an
image that is also in the official test split are excluded from train and val.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import SplitConfig
from olives.data.schema import Columns
from olives.data.splits import SPLITS, SplitError, assign_splits, check_no_leak, split_summary
from olives.io import read_json, write_json

INDEX, STATS, SUMMARY = "index.parquet", "stats.json", "splits.json"


class DuplicateLeakError(SplitError):
    """The same image bytes ended up in two supervised splits."""


def make_splits(
    index: pd.DataFrame, cfg: SplitConfig, cols: Columns, seed: int
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Return (index with `split` and clinical columns filled, stats, split summary)."""
    index = index.copy()
    index["split"] = "unlabeled"
    in_test = set(index.loc[index["labelled"] & (index["source_split"] == "test"), "sha1"])
    excluded = index["labelled"] & (index["source_split"] != "test") & index["sha1"].isin(in_test)
    index.loc[excluded, "split"] = "excluded_duplicate_of_test"
    pool = index[index["labelled"] & ~excluded]
    # Grouping by content hash links the patients that share an image into one group.
    index.loc[pool.index, "split"] = assign_splits(
        pool, list(cols.labels), cfg, seed, patient_column=cols.patient, group_column="sha1"
    )
    supervised = index[index["split"].isin(SPLITS)]
    check_no_leak(supervised["split"], supervised[cols.patient])
    check_no_duplicate_leak(supervised)
    stats = train_statistics(index, cols)
    index = fill_clinical(index, stats, cols)
    summary = split_summary(supervised, supervised["split"], list(cols.labels), cols.patient)
    summary["excluded_duplicates_of_test"] = int(excluded.sum())
    summary["unlabeled_rows"] = int((index["split"] == "unlabeled").sum())
    return index, stats, summary


def check_no_duplicate_leak(supervised: pd.DataFrame) -> None:
    spread = supervised.groupby("sha1")["split"].nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        rows = supervised[supervised["sha1"].isin(leaked.index)]["image_id"].head(5).tolist()
        raise DuplicateLeakError(f"{len(leaked)} identical image(s) in two splits, e.g. {rows}")


def train_statistics(index: pd.DataFrame, cols: Columns) -> dict[str, Any]:
    """Clinical mean/std/median and label prevalence, from the train split only."""
    train = index[index["split"] == "train"]
    clinical = {}
    for name in cols.clinical:
        values = train[name].dropna()
        if values.empty:
            raise SplitError(f"clinical column '{name}' has no value in the train split")
        clinical[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)) or 1.0,
            "median": float(values.median()),
            "missing_train": int(train[name].isna().sum()),
        }
    return {
        "clinical": clinical,
        "prevalence": {name: float(train[name].mean()) for name in cols.labels},
        "train_rows": len(train),
    }


def fill_clinical(index: pd.DataFrame, stats: dict[str, Any], cols: Columns) -> pd.DataFrame:
    """`<col>_missing` (0/1) and `<col>_z`: train-median-imputed, train-standardised values."""
    for name in cols.clinical:
        s = stats["clinical"][name]
        index[f"{name}_missing"] = index[name].isna().astype(np.float32)
        filled = index[name].fillna(s["median"])
        index[f"{name}_z"] = ((filled - s["mean"]) / s["std"]).astype(np.float32)
    return index


def clinical_features(index: pd.DataFrame, clinical: tuple[str, ...]) -> np.ndarray:
    """The model's clinical input: standardised values then missing indicators."""
    columns = [f"{c}_z" for c in clinical] + [f"{c}_missing" for c in clinical]
    if not columns:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.array(index[columns], dtype=np.float32)


def write_outputs(out_dir: Path, index: pd.DataFrame, stats: dict, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    index.to_parquet(out_dir / INDEX, index=False)
    write_json(out_dir / STATS, stats)
    write_json(out_dir / SUMMARY, summary)


def read_index(split_dir: Path) -> pd.DataFrame:
    """The split index (every cached row with its split and clinical features)."""
    return pd.read_parquet(Path(split_dir) / INDEX)


def read_stats(split_dir: Path) -> dict[str, Any]:
    """Train-split statistics: clinical mean/std/median (imputation, scaling) and prevalence."""
    return read_json(Path(split_dir) / STATS)


HELD_OUT = ("val", "test")


def pretraining_rows(index: pd.DataFrame, patient_column: str) -> pd.DataFrame:
    """The rows the encoder may see: the train split and the unlabelled rows of every patient
    who is not in the validation or test split (so no held-out patient's scan, labelled or
    not, shapes the features that are later evaluated on them)."""
    held_out = set(index.loc[index["split"].isin(HELD_OUT), patient_column])
    unlabeled = (index["split"] == "unlabeled") & ~index[patient_column].isin(held_out)
    return index[(index["split"] == "train") | unlabeled].reset_index(drop=True)
