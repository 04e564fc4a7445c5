"""Patient-bootstrap cost at RECOVERY scale: 1000 resamples, 40 patients x 100 images x 6 labels.

python benchmarks/evaluate.py
"""

from __future__ import annotations

import time

import numpy as np

from olives.evaluation.intervals import bootstrap_metrics, evaluate_predictions
from olives.evaluation.metrics import tune_thresholds

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def main() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 100)
    y_true = (rng.random((len(patients), 6)) < 0.3).astype(float)
    y_prob = np.clip(0.35 * y_true + rng.random(y_true.shape) * 0.65, 0, 1)
    thresholds = tune_thresholds(y_true, y_prob)
    start = time.perf_counter()
    bootstrap_metrics(y_true, y_prob, thresholds, patients, LABELS, 1000, 0)
    boot = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_predictions(y_true, y_prob, thresholds, patients, LABELS, 1000, 0.95, 0)
    full = time.perf_counter() - start
    print(f"bootstrap_metrics, 1000 resamples, 4000 images x 6 labels: {boot:.2f} s")
    print(f"evaluate_predictions (point estimates + bootstrap CIs):     {full:.2f} s")


if __name__ == "__main__":
    main()
