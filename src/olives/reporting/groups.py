"""Per-group scores for the report's tables: per patient, eye, visit or volume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from olives.evaluation.metrics import image_f1_scores


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
