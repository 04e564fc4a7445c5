"""The report's ROC, precision-recall and reliability figures, annotated for a reader.

The evaluate stage's figures are plain curves for `dvc plots`; these add what a reviewer looks
for first: AUROC / AP in the legend, the operating point at the tuned threshold, axis labels
in words, and the expected calibration error in the reliability panel's title.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from olives.evaluation.calibration import expected_calibration_error
from olives.evaluation.metrics import curve_tables
from olives.reporting.figures import save
from olives.reporting.operating import fast_counts, rates

Panel = Callable[[plt.Axes, str, int], None]


def _grid(labels: Sequence[str], draw: Panel, path: Path) -> Path:
    cols = min(3, len(labels))
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes.flat, labels, strict=False)):
        draw(ax, name, j)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    return save(fig, path)


def _one_class(ax: plt.Axes, name: str) -> None:
    ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center")
    ax.set_title(name)


def report_curves(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    labels: Sequence[str],
    folder: Path,
) -> dict[str, Path]:
    """`roc.png`, `pr.png` and `reliability.png` in `folder`; returns them by kind."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    curves = curve_tables(t, p, labels)
    decide = p >= np.asarray(thresholds)[None, :]

    def operating(j: int) -> tuple[float, float, float]:
        """(1 - specificity, sensitivity, PPV) at the tuned threshold."""
        r = rates(fast_counts(t[:, j], decide[:, j]))
        return 1.0 - r["specificity"], r["sensitivity"], r["ppv"]

    def roc(ax: plt.Axes, name: str, j: int) -> None:
        if name not in curves["roc"]:
            return _one_class(ax, name)
        table = curves["roc"][name]
        ax.plot(
            table["fpr"], table["tpr"], lw=1.5, label=f"AUROC {roc_auc_score(t[:, j], p[:, j]):.3f}"
        )
        fpr, tpr, _ = operating(j)
        ax.plot([fpr], [tpr], "o", c="crimson", label=f"threshold {thresholds[j]:.3f}")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set(
            title=name,
            xlabel="False positive rate (1 - specificity)",
            ylabel="True positive rate (sensitivity)",
        )
        ax.legend(loc="lower right", fontsize=7)

    def pr(ax: plt.Axes, name: str, j: int) -> None:
        if name not in curves["pr"]:
            return _one_class(ax, name)
        table = curves["pr"][name]
        ap = average_precision_score(t[:, j], p[:, j])
        ax.plot(table["recall"], table["precision"], lw=1.5, label=f"AP {ap:.3f}")
        _, tpr, ppv = operating(j)
        ax.plot([tpr], [ppv], "o", c="crimson", label=f"threshold {thresholds[j]:.3f}")
        ax.axhline(t[:, j].mean(), ls="--", c="grey", lw=0.8, label="prevalence")
        ax.set(title=name, xlabel="Recall (sensitivity)", ylabel="Precision (PPV)")
        ax.legend(loc="lower left", fontsize=7)

    def reliability(ax: plt.Axes, name: str, j: int) -> None:
        table = curves["calibration"][name]
        ece = expected_calibration_error(t[:, j], p[:, j])
        ax.plot(table["mean_predicted"], table["fraction_positive"], "o-", lw=1.5)
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set(
            title=f"{name}: ECE {ece:.3f}",
            xlabel="Mean predicted probability",
            ylabel="Observed fraction positive",
        )

    folder.mkdir(parents=True, exist_ok=True)
    return {
        "roc": _grid(labels, roc, folder / "roc.png"),
        "pr": _grid(labels, pr, folder / "pr.png"),
        "reliability": _grid(labels, reliability, folder / "reliability.png"),
    }
