"""Patient-level bootstrap intervals of every metric in `evaluation.metrics`, and
`evaluate_predictions`, the JSON-ready whole (point estimates with their intervals).

The bootstrap resamples PATIENTS (B-scans of one eye/patient are strongly correlated, so
resampling images would give intervals far too narrow).
Calling scikit-learn ~50 times per resample would take ~45 s for 1000 resamples, so the
bootstrap replicates are computed from per-patient sufficient statistics (confusion counts,
score-level histograms) with matrix products: resample b is a vector of patient draw counts
`c_b`, and every sum over images becomes `c_b @ per_patient_sums`. The tests check every
replicate against scikit-learn run on the physically resampled rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from olives.evaluation.metrics import (
    AVERAGED_METRICS,
    DEFAULT_THRESHOLD,
    LABEL_METRICS,
    check_labels,
    check_pair,
    check_thresholds,
    image_f1_scores,
    patient_index,
    patient_means,
    per_label_metrics,
    summary_metrics,
)
from olives.io import none_if_nan

# Elements per (resamples x score levels) block in the vectorised average precision.
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile interval and how many resamples had the metric defined."""

    low: float | None
    high: float | None
    n_used: int
    n_resamples: int


# ---------------------------------------------------------------------------------------------
# Patient bootstrap: generic (any metric, scikit-learn on resampled rows)
# ---------------------------------------------------------------------------------------------


def draw_patients(n_patients: int, n_resamples: int, seed: int) -> np.ndarray:
    """`[n_resamples, n_patients]` patient indices drawn with replacement."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_patients, size=(n_resamples, n_patients))


def _draw_counts(draws: np.ndarray, n_patients: int) -> np.ndarray:
    """How many times each patient was drawn, `[n_resamples, n_patients]` float64."""
    n = draws.shape[0]
    offsets = draws + n_patients * np.arange(n)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=n * n_patients)
    return counts.reshape(n, n_patients).astype(np.float64)


MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float | None]


def bootstrap_replicates(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    y_score: np.ndarray,
    patients: np.ndarray,
    n: int,
    seed: int,
) -> np.ndarray:
    """`metric_fn(y_true_rows, y_score_rows, draw_ids)` on `n` patient resamples (NaN = undefined).

    All images of a drawn patient come along; `draw_ids` numbers the draws 0..P-1, so a patient
    drawn twice appears as two patients. `metric_fn` returns None or NaN when undefined.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    inverse, n_patients = patient_index(patients, y_true.shape[0])
    rows_of = [np.flatnonzero(inverse == k) for k in range(n_patients)]
    out = np.full(n, np.nan)
    for b, draw in enumerate(draw_patients(n_patients, n, seed)):
        rows = np.concatenate([rows_of[k] for k in draw])
        ids = np.repeat(np.arange(n_patients), [rows_of[k].size for k in draw])
        value = metric_fn(y_true[rows], y_score[rows], ids)
        out[b] = np.nan if value is None else float(value)
    return out


def percentile_interval(replicates: np.ndarray, ci: float) -> BootstrapCI:
    """Percentile interval over the defined (non-NaN) replicates."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    values = np.asarray(replicates, dtype=np.float64)
    used = values[~np.isnan(values)]
    if used.size == 0:
        return BootstrapCI(None, None, 0, values.size)
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(used, [tail, 100.0 - tail])
    return BootstrapCI(float(low), float(high), int(used.size), values.size)


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    y_score: np.ndarray,
    patients: np.ndarray,
    n: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Patient-level percentile bootstrap of any metric (slow path; see `bootstrap_metrics`)."""
    return percentile_interval(
        bootstrap_replicates(metric_fn, y_true, y_score, patients, n, seed), ci
    )


# ---------------------------------------------------------------------------------------------
# Patient bootstrap: every metric at once, vectorised over resamples
# ---------------------------------------------------------------------------------------------


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _confusion_replicates(
    t: np.ndarray, decide: np.ndarray, onehot: np.ndarray, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Resampled tp/fp/fn/tn `[B, L]`: per-patient sums weighted by draw counts."""
    t, d = t.astype(bool), decide.astype(bool)
    cells = {"tp": t & d, "fp": ~t & d, "fn": t & ~d, "tn": ~t & ~d}
    return {k: counts @ (onehot @ v.astype(np.float64)) for k, v in cells.items()}


def _level_histograms(
    t: np.ndarray, s: np.ndarray, inverse: np.ndarray, n_patients: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient counts of positives / negatives at each distinct score, `[P, K]` ascending."""
    _, level = np.unique(s, return_inverse=True)
    level = level.reshape(-1)
    k = int(level.max()) + 1
    flat = inverse * k + level
    pos = np.bincount(flat, weights=t.astype(np.float64), minlength=n_patients * k)
    neg = np.bincount(flat, weights=1.0 - t, minlength=n_patients * k)
    return pos.reshape(n_patients, k), neg.reshape(n_patients, k)


def _auroc_replicates(pos: np.ndarray, neg: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC (ties count 1/2, as scikit-learn's trapezoid does).

    Correctly ordered (pos, neg) pairs between patients p and q form a `[P, P]` matrix M; a
    resample with draw counts c has c^T M c such pairs, so no per-resample sort is needed.
    """
    below = np.cumsum(neg, axis=1) - 0.5 * neg
    pairs = pos @ below.T
    num = ((counts @ pairs) * counts).sum(axis=1)
    den = (counts @ pos.sum(axis=1)) * (counts @ neg.sum(axis=1))
    return _safe_div(num, den)


def _ap_replicates(pos: np.ndarray, neg: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted average precision: sum over score levels (descending) of dRecall x precision."""
    pos, neg = pos[:, ::-1], neg[:, ::-1]
    # Levels without positives add no recall: fold their negatives into the next positive
    # level at or below them (negatives below the last positive level never count).
    keep = pos.sum(axis=0) > 0
    group = np.cumsum(keep) - keep
    n_groups = int(keep.sum())
    valid = group < n_groups
    if n_groups == 0:
        return np.full(counts.shape[0], np.nan)
    neg_g = np.zeros((neg.shape[0], n_groups))
    np.add.at(neg_g.T, group[valid], neg[:, valid].T)
    pos_g = pos[:, keep]
    out = np.empty(counts.shape[0])
    step = max(1, _BLOCK_ELEMENTS // n_groups)
    for start in range(0, counts.shape[0], step):
        c = counts[start : start + step]
        wpos, wneg = c @ pos_g, c @ neg_g
        tps, fps = np.cumsum(wpos, axis=1), np.cumsum(wneg, axis=1)
        precision = _safe_div(tps, tps + fps)
        gain = np.where(wpos > 0, wpos * precision, 0.0).sum(axis=1)
        out[start : start + step] = _safe_div(gain, tps[:, -1])
    return out


def _ranking_replicates(
    t: np.ndarray, s: np.ndarray, inverse: np.ndarray, n_patients: int, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = _level_histograms(t, s, inverse, n_patients)
    return _auroc_replicates(pos, neg, counts), _ap_replicates(pos, neg, counts)


def _f1_sets(conf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "f1": _safe_div(2 * conf["tp"], 2 * conf["tp"] + conf["fp"] + conf["fn"]),
        "sensitivity": _safe_div(conf["tp"], conf["tp"] + conf["fn"]),
        "specificity": _safe_div(conf["tn"], conf["tn"] + conf["fp"]),
    }


def _macro_replicates(per_label: np.ndarray, included: np.ndarray) -> np.ndarray:
    """Mean over the labels the point estimate used; NaN if one of them is undefined."""
    if not included.any():
        return np.full(per_label.shape[0], np.nan)
    return per_label[:, included].mean(axis=1)


def bootstrap_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    n: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Replicates `[n]` of every metric of `evaluate_predictions` over patient resamples.

    Keys: `"<label>.<metric>"`, `"macro.<metric>"`, `"micro.<metric>"`, `"vip_phase1"`,
    `"vip_phase2"`; NaN marks a resample where the metric is undefined. Uses the same draws as
    `bootstrap_replicates` with the same seed.
    """
    t, p = check_pair(y_true, y_prob)
    thr = check_thresholds(thresholds, t.shape[1])
    names = check_labels(labels, t.shape[1])
    inverse, n_patients = patient_index(patients, t.shape[0])
    counts = _draw_counts(draw_patients(n_patients, n, seed), n_patients)
    onehot = np.zeros((n_patients, t.shape[0]))
    onehot[inverse, np.arange(t.shape[0])] = 1.0

    per: dict[str, np.ndarray] = {}  # metric -> [B, L]
    decisions = {"": (p >= thr).astype(np.int8), "_at_0.5": (p >= DEFAULT_THRESHOLD)}
    for suffix, decide in decisions.items():
        conf = _confusion_replicates(t, decide, onehot, counts)
        sets = _f1_sets(conf)
        per[f"f1{suffix}"] = sets["f1"]
        if not suffix:
            per["sensitivity"], per["specificity"] = sets["sensitivity"], sets["specificity"]
        micro_conf = {k: v.sum(axis=1, keepdims=True) for k, v in conf.items()}
        per[f"micro_f1{suffix}"] = _f1_sets(micro_conf)["f1"][:, 0]
    ranking = [
        _ranking_replicates(t[:, j], p[:, j], inverse, n_patients, counts)
        for j in range(t.shape[1])
    ]
    per["auroc"] = np.stack([r[0] for r in ranking], axis=1)
    per["average_precision"] = np.stack([r[1] for r in ranking], axis=1)
    micro_auroc, micro_ap = _ranking_replicates(
        t.ravel(), p.ravel(), np.repeat(inverse, t.shape[1]), n_patients, counts
    )

    out: dict[str, np.ndarray] = {}
    for metric in LABEL_METRICS:
        for j, name in enumerate(names):
            out[f"{name}.{metric}"] = per[metric][:, j]
    point = per_label_metrics(t, p, thr, names)
    for metric in AVERAGED_METRICS:
        included = point[metric].notna().to_numpy()
        out[f"macro.{metric}"] = _macro_replicates(per[metric], included)
    out["micro.auroc"], out["micro.average_precision"] = micro_auroc, micro_ap
    out["micro.f1"], out["micro.f1_at_0.5"] = per["micro_f1"], per["micro_f1_at_0.5"]
    out["vip_phase1"] = np.nan_to_num(per["f1"], nan=0.0).mean(axis=1)
    image_scores = image_f1_scores(t, decisions[""])
    out["vip_phase2"] = counts @ patient_means(image_scores, inverse, n_patients) / n_patients
    return out


# ---------------------------------------------------------------------------------------------
# Everything together, JSON-ready
# ---------------------------------------------------------------------------------------------


def _with_ci(
    target: dict[str, Any],
    metric: str,
    value: float,
    key: str,
    boot: dict[str, np.ndarray],
    ci: float,
    used: dict[str, int],
) -> None:
    """Store `metric` and `metric_ci` ([lo, hi] or None) in `target`, count resamples used."""
    target[metric] = none_if_nan(value)
    if key not in boot or target[metric] is None:
        target[f"{metric}_ci"] = None
        return
    interval = percentile_interval(boot[key], ci)
    used[key] = interval.n_used
    bounds = (interval.low, interval.high)
    target[f"{metric}_ci"] = None if interval.low is None else [float(b) for b in bounds]


def evaluate_predictions(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-label, macro, micro and VIP Cup metrics with patient-bootstrap intervals.

    Returns a JSON-serialisable dict; `bootstrap.n_used` says, per metric, how many of the
    `n_boot` resamples had it defined (the interval uses only those).
    """
    t, p = check_pair(y_true, y_prob)
    thr = check_thresholds(thresholds, t.shape[1])
    names = check_labels(labels, t.shape[1])
    _, n_patients = patient_index(patients, t.shape[0])
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    table = per_label_metrics(t, p, thr, names)
    summary = summary_metrics(t, p, thr, patients, per_label=table)
    boot = bootstrap_metrics(t, p, thr, patients, names, n_boot, seed) if n_boot > 0 else {}
    used: dict[str, int] = {}

    per_label: dict[str, dict[str, Any]] = {}
    for name, row in table.iterrows():
        entry: dict[str, Any] = {
            "prevalence": float(row["prevalence"]),
            "n_pos": int(row["n_pos"]),
            "n_neg": int(row["n_neg"]),
        }
        for metric in LABEL_METRICS:
            _with_ci(entry, metric, row[metric], f"{name}.{metric}", boot, ci, used)
        entry["threshold"] = float(row["threshold"])
        entry["note"] = row["note"]
        per_label[str(name)] = entry

    result: dict[str, Any] = {"labels": names, "n_images": int(t.shape[0])}
    result["n_patients"] = n_patients
    result["per_label"] = per_label
    for avg in ("macro", "micro"):
        block: dict[str, Any] = {}
        for metric in AVERAGED_METRICS:
            _with_ci(block, metric, summary[avg][metric], f"{avg}.{metric}", boot, ci, used)
            if avg == "macro":
                block[f"{metric}_n_labels"] = summary["macro"][f"{metric}_n_labels"]
        result[avg] = block
    for score in ("vip_phase1", "vip_phase2"):
        _with_ci(result, score, summary[score], score, boot, ci, used)
    result["bootstrap"] = {
        "unit": "patient",
        "n_resamples": int(n_boot),
        "ci": float(ci),
        "seed": int(seed),
        "n_used": used,
    }
    return result
