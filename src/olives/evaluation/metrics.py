"""Per-biomarker point estimates, VIP Cup 2023 scores and curves (scikit-learn); the patient
bootstrap intervals around them are in `evaluation.intervals`.

Inputs are numpy arrays: `y_true[N, L]` of 0/1, `y_prob[N, L]` of scores, `patients[N]` of any
hashable ids. Outputs are plain dicts / DataFrames; an undefined value is `None` or NaN, never a
made-up number.

VIP Cup 2023 scores (from the organisers' starter code, olivesgatech VIP Cup 2023
`phase2_sample_eval.py`, kept in public forks such as DidulaThavisha/TESSERACT):
- phase 1: `f1_score(y_true, y_pred, average="macro")` over the six labels, all images pooled;
  scikit-learn's default turns a label with no true and no predicted positive into F1 = 0,
  which we keep (`zero_division=0`) so the number matches the leaderboard's.
- phase 2: for every image, `f1_score(row_true, row_pred, average="macro")` where the six
  biomarkers of that image are the *samples* of a binary problem, i.e. the mean of the F1 of
  class "present" and class "absent" over the classes that occur in the row (so an image with
  no biomarker predicted as none scores 1.0, and zero_division is never reached); then the
  mean per patient, then the mean over patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    recall_score,
    roc_auc_score,
    roc_curve,
)

# Metrics computed per label, at the tuned thresholds unless the name says otherwise.
LABEL_METRICS: tuple[str, ...] = (
    "auroc",
    "average_precision",
    "f1",
    "f1_at_0.5",
    "sensitivity",
    "specificity",
)
# Metrics averaged over labels (macro) and over all label decisions pooled (micro).
AVERAGED_METRICS: tuple[str, ...] = ("auroc", "average_precision", "f1", "f1_at_0.5")
DEFAULT_THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def check_pair(y_true: Any, y_prob: Any, prob_name: str = "y_prob") -> tuple[np.ndarray, ...]:
    """Return (int8 y_true, float64 y_prob), both [N, L], or raise naming the parameter."""
    t = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"y_true must be 2-D [images, labels], got shape {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"{prob_name} has shape {p.shape}, y_true has shape {t.shape}")
    if t.shape[0] == 0:
        raise ValueError("y_true has no rows")
    if not np.isin(t, (0, 1)).all():
        bad = np.argwhere(~np.isin(t, (0, 1)))[0]
        raise ValueError(f"y_true must hold only 0/1, got {t[tuple(bad)]!r} at {tuple(bad)}")
    if not np.isfinite(p).all():
        bad = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"{prob_name} must be finite, got {p[tuple(bad)]} at {tuple(bad)}")
    return t.astype(np.int8), p


def check_thresholds(thresholds: Any, n_labels: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.shape != (n_labels,):
        raise ValueError(f"thresholds must have {n_labels} values, got {thr.size}")
    return thr


def check_labels(labels: Sequence[str], n_labels: int) -> list[str]:
    names = list(labels)
    if len(names) != n_labels:
        raise ValueError(f"labels has {len(names)} names, y_true has {n_labels} columns")
    return names


def patient_index(patients: Any, n_rows: int) -> tuple[np.ndarray, int]:
    """Map patient ids to 0..P-1; raise if the length does not match the images."""
    ids = np.asarray(patients).reshape(-1)
    if ids.shape[0] != n_rows:
        raise ValueError(f"patients has {ids.shape[0]} entries, y_true has {n_rows} rows")
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(inverse.max()) + 1


# ---------------------------------------------------------------------------------------------
# Thresholds and point estimates
# ---------------------------------------------------------------------------------------------


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Per-label threshold maximising F1 on these (validation) data; decide `y_prob >= thr`.

    The candidates are the distinct scores (scikit-learn's `precision_recall_curve`). Ties go
    to the lowest threshold: among equally good cut-offs, missing a biomarker is the costlier
    error. A label without positives keeps 0.5 (F1 is 0 for every threshold there).
    """
    t, p = check_pair(y_true, y_prob)
    out = np.full(t.shape[1], DEFAULT_THRESHOLD)
    for j in range(t.shape[1]):
        if t[:, j].sum() == 0:
            continue
        precision, recall, cuts = precision_recall_curve(t[:, j], p[:, j])
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        best = np.flatnonzero(np.isclose(f1, f1.max(), rtol=1e-12, atol=0.0))[0]
        out[j] = cuts[best]
    return out


def _label_notes(n_pos: int, n_neg: int, n_pred: int) -> str:
    notes = []
    if n_pos == 0:
        notes.append("no positive in this split: AUROC, AP and sensitivity undefined")
    if n_neg == 0:
        notes.append("no negative in this split: AUROC and specificity undefined")
    if n_pos == 0 and n_pred == 0:
        notes.append("no positive and none predicted: F1 undefined")
    return "; ".join(notes)


def _one_label(t: np.ndarray, p: np.ndarray, thr: float) -> dict[str, Any]:
    """All metrics of one label with scikit-learn; NaN where undefined."""
    n_pos, n_neg = int(t.sum()), int(t.size - t.sum())
    decide = (p >= thr).astype(np.int8)
    half = (p >= DEFAULT_THRESHOLD).astype(np.int8)
    nan = float("nan")
    return {
        "prevalence": n_pos / t.size,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "auroc": roc_auc_score(t, p) if n_pos and n_neg else nan,
        "average_precision": average_precision_score(t, p) if n_pos else nan,
        "f1": f1_score(t, decide, zero_division=np.nan),
        "f1_at_0.5": f1_score(t, half, zero_division=np.nan),
        "sensitivity": recall_score(t, decide, zero_division=np.nan),
        "specificity": recall_score(t, decide, pos_label=0, zero_division=np.nan),
        "threshold": float(thr),
        "note": _label_notes(n_pos, n_neg, int(decide.sum())),
    }


def per_label_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]
) -> pd.DataFrame:
    """One row per label (index = label name); NaN where a metric is undefined, see `note`."""
    t, p = check_pair(y_true, y_prob)
    thr = check_thresholds(thresholds, t.shape[1])
    names = check_labels(labels, t.shape[1])
    rows = [_one_label(t[:, j], p[:, j], thr[j]) for j in range(t.shape[1])]
    return pd.DataFrame(rows, index=pd.Index(names, name="label"))


def vip_phase1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """VIP Cup 2023 phase 1: macro-F1 over labels, images pooled, zero_division=0."""
    t, d = check_pair(y_true, y_pred, "y_pred")
    return float(f1_score(t, d.astype(np.int8), average="macro", zero_division=0))


def image_f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-image score of VIP Cup phase 2: `f1_score(row_true, row_pred, average="macro")`.

    That score depends only on the row's (tp, fp, fn, tn) counts, so scikit-learn is called once
    per distinct count tuple (at most 84 for six labels) on a row rebuilt from the counts.
    """
    t, d = check_pair(y_true, y_pred, "y_pred")
    t, d = t.astype(bool), d.astype(bool)
    cells = np.stack([(t & d).sum(1), (~t & d).sum(1), (t & ~d).sum(1), (~t & ~d).sum(1)], 1)
    unique, inverse = np.unique(cells, axis=0, return_inverse=True)
    scores = np.empty(unique.shape[0])
    for i, (tp, fp, fn, tn) in enumerate(unique):
        row_true = np.repeat([1, 0, 1, 0], [tp, fp, fn, tn])
        row_pred = np.repeat([1, 1, 0, 0], [tp, fp, fn, tn])
        scores[i] = f1_score(row_true, row_pred, average="macro")
    return scores[inverse.reshape(-1)]


def vip_phase2(y_true: np.ndarray, y_pred: np.ndarray, patients: np.ndarray) -> float:
    """VIP Cup 2023 phase 2: per-image macro-F1, averaged per patient, then over patients."""
    scores = image_f1_scores(y_true, y_pred)
    inverse, n_patients = patient_index(patients, scores.shape[0])
    return float(patient_means(scores, inverse, n_patients).mean())


def patient_means(values: np.ndarray, inverse: np.ndarray, n_patients: int) -> np.ndarray:
    sums = np.bincount(inverse, weights=values, minlength=n_patients)
    return sums / np.bincount(inverse, minlength=n_patients)


def _macro(values: pd.Series) -> tuple[float, int]:
    defined = values.dropna()
    return (float(defined.mean()) if len(defined) else float("nan")), len(defined)


def _micro(t: np.ndarray, p: np.ndarray, thr: np.ndarray) -> dict[str, float]:
    flat_t, flat_p = t.ravel(), p.ravel()
    both = 0 < flat_t.sum() < flat_t.size
    return {
        "auroc": roc_auc_score(flat_t, flat_p) if both else float("nan"),
        "average_precision": (
            average_precision_score(flat_t, flat_p) if flat_t.any() else float("nan")
        ),
        "f1": f1_score(t, (p >= thr).astype(np.int8), average="micro", zero_division=np.nan),
        "f1_at_0.5": f1_score(
            t, (p >= DEFAULT_THRESHOLD).astype(np.int8), average="micro", zero_division=np.nan
        ),
    }


def summary_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    patients: np.ndarray,
    per_label: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Macro (over labels with a defined value; `<metric>_n_labels` says how many) and micro
    averages of AUROC, AP and F1, plus `vip_phase1` / `vip_phase2` at the tuned thresholds.

    Values are floats, NaN where undefined (`evaluate_predictions` turns them into None).
    """
    t, p = check_pair(y_true, y_prob)
    thr = check_thresholds(thresholds, t.shape[1])
    if per_label is None:
        per_label = per_label_metrics(t, p, thr, [f"L{j}" for j in range(t.shape[1])])
    macro: dict[str, float | int] = {}
    for name in AVERAGED_METRICS:
        macro[name], macro[f"{name}_n_labels"] = _macro(per_label[name])
    decisions = (p >= thr).astype(np.int8)
    return {
        "macro": macro,
        "micro": _micro(t, p, thr),
        "vip_phase1": vip_phase1(t, decisions),
        "vip_phase2": vip_phase2(t, decisions, patients),
    }


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------


def curve_tables(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str]
) -> dict[str, dict[str, pd.DataFrame]]:
    """Per-label ROC (`fpr`, `tpr`), PR (`recall`, `precision`) and reliability points
    (`mean_predicted`, `fraction_positive`, 10 equal-width bins). A label with one class only
    has no ROC or PR curve (the figures say so)."""
    t, p = check_pair(y_true, y_prob)
    names = check_labels(labels, t.shape[1])
    curves: dict[str, dict[str, pd.DataFrame]] = {"roc": {}, "pr": {}, "calibration": {}}
    for j, name in enumerate(names):
        if 0 < t[:, j].sum() < len(t):
            fpr, tpr, _ = roc_curve(t[:, j], p[:, j])
            precision, recall, _ = precision_recall_curve(t[:, j], p[:, j])
            curves["roc"][name] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
            curves["pr"][name] = pd.DataFrame({"recall": recall, "precision": precision})
        fraction, mean = calibration_curve(t[:, j], p[:, j], n_bins=10, strategy="uniform")
        curves["calibration"][name] = pd.DataFrame(
            {"mean_predicted": mean, "fraction_positive": fraction}
        )
    return curves
