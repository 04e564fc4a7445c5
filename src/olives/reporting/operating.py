"""What a clinician reads at the tuned threshold: confusion counts, sensitivity, specificity,
PPV and NPV with patient-bootstrap intervals, and when the test data is too thin to trust them
or the decisions at the tuned threshold fail on test (sensitivity or specificity below
`RATE_FLOOR`).

Counts come from scikit-learn's confusion matrix. Intervals use `metrics.bootstrap_replicates`
with the evaluate stage's seed and resample count, so they use the same patient draws as
`metrics.json` (the sensitivity and specificity intervals are the same numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from olives.evaluation.intervals import MetricFn, bootstrap_replicates, percentile_interval

RATES = ("sensitivity", "specificity", "ppv", "npv")
# Fewer test patients than this behind a biomarker's positives: the report warns. With 5, one
# patient holds at least a fifth of the positive volumes, and whole-patient resamples swing.
MIN_PATIENTS = 5
# A sensitivity or specificity at the tuned threshold below this: the report warns. Under 0.5,
# fewer than half of the positives (negatives) are called so: the threshold tuned on validation
# does not carry over, whatever the AUROC.
RATE_FLOOR = 0.5
METRIC_NAMES = {
    "auroc": "AUROC",
    "average_precision": "AP",
    "f1": "F1",
    "f1_at_0.5": "F1@0.5",
    "ppv": "PPV",
    "npv": "NPV",
}


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn: as in the evaluate stage's `metrics.json`."""

    n_resamples: int
    ci: float
    seed: int


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """`tp`, `fp`, `fn`, `tn` of one binary label."""
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}


def rates(counts: dict[str, float]) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV from counts; NaN when a denominator is zero."""

    def ratio(num: float, other: float) -> float:
        return num / (num + other) if num + other > 0 else float("nan")

    return {
        "sensitivity": ratio(counts["tp"], counts["fn"]),
        "specificity": ratio(counts["tn"], counts["fp"]),
        "ppv": ratio(counts["tp"], counts["fp"]),
        "npv": ratio(counts["tn"], counts["fn"]),
    }


def fast_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """`confusion_counts` without scikit-learn's input checks (run once per resample)."""
    t, d = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    return {
        "tp": int((t & d).sum()),
        "fp": int((~t & d).sum()),
        "fn": int((t & ~d).sum()),
        "tn": int((~t & ~d).sum()),
    }


def _rate_fn(name: str) -> MetricFn:
    def metric(t: np.ndarray, d: np.ndarray, _ids: np.ndarray) -> float:
        return rates(fast_counts(t, d))[name]

    return metric


def operating_point(
    y_true: np.ndarray, y_pred: np.ndarray, patients: np.ndarray, boot: Bootstrap
) -> dict[str, Any]:
    """Counts, the four rates and their intervals (`<rate>_ci`, None when undefined)."""
    t, d = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    counts = confusion_counts(t, d)
    out: dict[str, Any] = dict(counts)
    for name, value in rates(counts).items():
        out[name] = value
        out[f"{name}_ci"] = None
        if boot.n_resamples > 0 and value == value:
            reps = bootstrap_replicates(_rate_fn(name), t, d, patients, boot.n_resamples, boot.seed)
            interval = percentile_interval(reps, boot.ci)
            if interval.low is not None:
                out[f"{name}_ci"] = [interval.low, interval.high]
            out[f"{name}_n_used"] = interval.n_used
    return out


def operating_points(
    predictions: pd.DataFrame, labels: Sequence[str], patient_column: str, boot: Bootstrap
) -> dict[str, dict[str, Any]]:
    """`operating_point` per label from `predictions.csv` (`<label>` and `<label>_pred`)."""
    patients = predictions[patient_column].to_numpy()
    return {
        label: operating_point(
            predictions[label].to_numpy(), predictions[f"{label}_pred"].to_numpy(), patients, boot
        )
        for label in labels
    }


def positive_patients(predictions: pd.DataFrame, label: str, patient_column: str) -> int:
    """How many patients the label's positive scans come from."""
    return int(predictions.loc[predictions[label] == 1, patient_column].nunique())


def caveats(
    predictions: pd.DataFrame,
    labels: Sequence[str],
    patient_column: str,
    bootstrap: dict[str, Any],
    min_patients: int = MIN_PATIENTS,
    unit: str = "scans",
) -> dict[str, list[str]]:
    """Per label, the reasons to read its figures with care (empty list: none).

    - its positives come from fewer than `min_patients` patients (one patient's scans then
      decide the estimate, and resamples without them are undefined);
    - some bootstrap resamples had the metric undefined and were dropped (`n_used`).
    """
    total = int(bootstrap.get("n_resamples", 0))
    n_used = bootstrap.get("n_used", {})
    out: dict[str, list[str]] = {}
    for label in labels:
        notes = []
        n_patients = positive_patients(predictions, label, patient_column)
        n_pos = int((predictions[label] == 1).sum())
        if n_patients < min_patients:
            notes.append(
                f"its {n_pos} positive {unit} come from {n_patients} of "
                f"{predictions[patient_column].nunique()} test patients "
                f"(fewer than {min_patients})"
            )
        dropped: dict[int, list[str]] = {}
        for key, used in n_used.items():
            if key.startswith(f"{label}.") and used < total:
                metric = key.split(".", 1)[1]
                dropped.setdefault(total - used, []).append(METRIC_NAMES.get(metric, metric))
        if dropped:
            parts = [f"{n} from {', '.join(names)}" for n, names in sorted(dropped.items())[::-1]]
            notes.append(
                f"bootstrap resamples without a positive or a negative were left out of its "
                f"intervals (of {total}): {'; '.join(parts)}"
            )
        out[label] = notes
    return out


def below_floor(
    points: dict[str, dict[str, Any]],
    labels: Sequence[str],
    unit: str = "scan",
    floor: float = RATE_FLOOR,
) -> dict[str, str]:
    """Per label whose sensitivity or specificity (`operating_point`) is below `floor`, why,
    with the counts; undefined rates (no positive or no negative) are not flagged."""
    parts = {
        "sensitivity": ("tp", "fn", "positive", "false negative"),
        "specificity": ("tn", "fp", "negative", "false positive"),
    }
    out: dict[str, str] = {}
    for label in labels:
        p = points[label]
        found = [
            f"{rate} at the tuned threshold is {p[rate]:.3f} ({p[right]} of "
            f"{_count(p[right] + p[wrong], f'{kind} {unit}')} called {kind}; "
            f"{_count(p[wrong], errors)})"
            for rate, (right, wrong, kind, errors) in parts.items()
            if p[rate] == p[rate] and p[rate] < floor
        ]
        if found:
            out[label] = " and ".join(found)
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
