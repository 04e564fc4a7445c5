"""Metrics per volume (patient x eye x visit, the unit a clinician decides on) with patient
bootstrap intervals: `evaluate_predictions` on the volume table of `data.volumes` (a volume is
positive when any B-scan is; its probability is its highest B-scan probability).

The evaluate stage writes them to `metrics.json` under `per_volume`, and the report reads them
there. The volume table is an argument, not computed here: the volume rule lives in
`olives.data.volumes` (a neighbouring package this one does not import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from olives.evaluation.intervals import evaluate_predictions

# VIP Cup scores are defined on images: a per-volume version would be another score.
IMAGE_ONLY = ("vip_phase1", "vip_phase2")


def volume_metrics(
    volumes: pd.DataFrame | str,
    labels: Sequence[str],
    thresholds: np.ndarray,
    patient_column: str,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The `per_volume` block: as `evaluate_predictions` (`per_label`, `macro`, `micro`,
    `bootstrap`) without the VIP Cup scores, counting `n_volumes`; with `volumes` a reason
    (no volume ids), `{"unit": "volume", "unavailable": reason}`.

    `volumes`: one row per volume with `<label>` and `<label>_prob` per label, the patient and
    `scans` (`data.volumes.aggregate_volumes`); same thresholds and resamples as per scan.
    """
    if isinstance(volumes, str):
        return {"unit": "volume", "unavailable": volumes}
    names = list(labels)
    result = evaluate_predictions(
        volumes[names].to_numpy(dtype=np.int8),
        volumes[[f"{n}_prob" for n in names]].to_numpy(dtype=np.float64),
        thresholds,
        volumes[patient_column].to_numpy(),
        names,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
    block: dict[str, Any] = {"unit": "volume", "n_volumes": result.pop("n_images")}
    block["n_scans"] = int(volumes["scans"].sum())
    for key in IMAGE_ONLY:
        result.pop(key)
        result.pop(f"{key}_ci")
        result["bootstrap"]["n_used"].pop(key, None)
    return block | result
