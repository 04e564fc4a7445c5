"""Calibrated probabilities: per-biomarker temperature scaling, ECE and Brier score.

Temperature scaling (Guo et al. 2017) divides each biomarker's logit by one positive number
fitted on the validation split to minimise the log loss. It is monotonic, so AUROC, AP and the
ranking of scans do not move; only the probabilities become honest (a 0.8 means about 80 %
of such scans carry the biomarker), which focal loss in particular does not give: it pushes
probabilities towards 0.5.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import brier_score_loss, log_loss

from olives.evaluation.metrics import tune_thresholds

LOG_T_BOUNDS = (-3.0, 3.0)  # temperatures between 0.05 and 20


def fit_temperatures(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One temperature per label (column); 1.0 where a label has a single class."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape or z.ndim != 2:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must be the same [N, L]")
    out = np.ones(z.shape[1])
    for j in range(z.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            out[j] = _fit_one(z[:, j], y[:, j])
    return out


def _fit_one(z: np.ndarray, y: np.ndarray) -> float:
    def nll(log_t: float) -> float:
        return log_loss(y, np.clip(expit(z / np.exp(log_t)), 1e-12, 1 - 1e-12), labels=[0, 1])

    found = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def calibrated(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """sigmoid(logit / T) per label."""
    return expit(np.asarray(logits, dtype=np.float64) / np.asarray(temperatures)[None, :])


def fit_decisions(
    logits: np.ndarray, labels: np.ndarray, calibrate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(temperatures, thresholds, calibrated probabilities) from validation logits: one rule
    for a trained model (`training.loop`) and for its test-time-augmented views (the teacher
    axis's student + TTA), so each is decided on the logits it is scored with."""
    temperatures = fit_temperatures(logits, labels) if calibrate else np.ones(logits.shape[1])
    probs = calibrated(logits, temperatures)
    return temperatures, tune_thresholds(labels, probs), probs


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE over `n_bins` equal-width bins: sum over bins of (bin share) x |positive rate -
    mean probability|. The last bin includes 1.0."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must be the same non-empty 1-D")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, y, n_bins) - np.bincount(bins, p, n_bins))
    return float(gap.sum() / len(y)) if count.any() else 0.0


def calibration_table(
    y_true: np.ndarray,
    logits: np.ndarray,
    temperatures: np.ndarray,
    labels: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    """Per label: temperature, ECE and Brier before (T = 1) and after calibration."""
    raw, cal = expit(np.asarray(logits, dtype=np.float64)), calibrated(logits, temperatures)
    table = {}
    for j, name in enumerate(labels):
        t = np.asarray(y_true)[:, j]
        table[name] = {
            "temperature": float(temperatures[j]),
            "ece_raw": expected_calibration_error(t, raw[:, j]),
            "ece": expected_calibration_error(t, cal[:, j]),
            "brier_raw": float(brier_score_loss(t, raw[:, j], pos_label=1)),
            "brier": float(brier_score_loss(t, cal[:, j], pos_label=1)),
        }
    return table
