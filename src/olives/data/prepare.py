"""The `split` stage: patient-level splits of the cache plus train-only statistics.

Kept apart from `preprocess` so that changing a split parameter (a k-fold index, a fraction)
never re-decodes images. Duplicates are handled here because they decide where rows may go:
patients that share a byte-identical labelled image are linked into one group (so the image
cannot land in two splits), and training copies of an image that is also in the official test
split are excluded from train and val.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import SplitConfig
from olives.data.sources import Columns
from olives.data.splits import assign_splits, check_no_leak, split_summary

SUPERVISED = ("train", "val", "test")


class DuplicateLeakError(ValueError):
    """The same image bytes ended up in two supervised splits."""


def make_splits(
    index: pd.DataFrame, images: np.ndarray, cfg: SplitConfig, cols: Columns, seed: int
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Return (index with `split` and clinical columns filled, stats, split summary)."""
    index = index.copy()
    index["split"] = "unlabeled"
    in_test = set(index.loc[index["labelled"] & (index["source_split"] == "test"), "sha1"])
    excluded = index["labelled"] & (index["source_split"] != "test") & index["sha1"].isin(in_test)
    index.loc[excluded, "split"] = "excluded_duplicate_of_test"
    index["link_group"] = link_patients(index, index["labelled"] & ~excluded, cols.patient)
    pool = index[index["labelled"] & ~excluded]
    index.loc[pool.index, "split"] = assign_splits(
        pool, list(cols.labels), cfg, seed, patient_column=cols.patient, group_column="link_group"
    )
    supervised = index[index["split"].isin(SUPERVISED)]
    check_no_leak(supervised["split"], supervised[cols.patient])
    check_no_duplicate_leak(supervised)
    stats = train_statistics(index, images, cols)
    index = fill_clinical(index, stats, cols)
    summary = split_summary(supervised, supervised["split"], list(cols.labels), cols.patient)
    summary["excluded_duplicates_of_test"] = int(excluded.sum())
    summary["unlabeled_rows"] = int((index["split"] == "unlabeled").sum())
    return index, stats, summary


def link_patients(index: pd.DataFrame, linking: pd.Series, patient_column: str) -> pd.Series:
    """Group id per row: patients connected through an image shared by `linking` rows are
    one group, so the splitter keeps them together."""
    parent: dict[Any, Any] = {}

    def find(p: Any) -> Any:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for patients in index[linking].groupby("sha1")[patient_column].unique():
        for other in patients[1:]:
            parent[find(other)] = find(patients[0])
    roots = index[patient_column].map(find)
    return pd.Series(pd.factorize(roots, sort=True)[0], index=index.index, dtype=np.int64)


def check_no_duplicate_leak(supervised: pd.DataFrame) -> None:
    spread = supervised.groupby("sha1")["split"].nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        rows = supervised[supervised["sha1"].isin(leaked.index)]["image_id"].head(5).tolist()
        raise DuplicateLeakError(f"{len(leaked)} identical image(s) in two splits, e.g. {rows}")


def train_statistics(
    index: pd.DataFrame, images: np.ndarray, cols: Columns, chunk: int = 512
) -> dict[str, Any]:
    """Clinical mean/std/median and image intensity mean/std, from the train split only."""
    train = index[index["split"] == "train"]
    clinical = {}
    for name in cols.clinical:
        values = train[name].dropna()
        if values.empty:
            raise ValueError(f"clinical column '{name}' has no value in the train split")
        clinical[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)) or 1.0,
            "median": float(values.median()),
            "missing_train": int(train[name].isna().sum()),
        }
    rows = np.sort(train["row"].to_numpy())
    total, total_sq = 0.0, 0.0
    for start in range(0, len(rows), chunk):
        block = images[rows[start : start + chunk]].astype(np.float64) / 255.0
        total += block.sum()
        total_sq += np.square(block).sum()
    n = max(len(rows) * images.shape[1] * images.shape[2], 1)
    mean = total / n
    return {
        "clinical": clinical,
        "image": {"mean": mean, "std": float(np.sqrt(max(total_sq / n - mean**2, 0.0)))},
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
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    index.to_parquet(out_dir / "index.parquet", index=False)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out_dir / "splits.json").write_text(json.dumps(summary, indent=2) + "\n")
