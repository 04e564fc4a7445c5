"""Matplotlib figures shared by the train, evaluate and report stages (Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Train/val loss and the validation macro AUROC/F1 per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    for key, name in (("val_macro_auroc", "macro AUROC"), ("val_macro_f1", "macro F1 @0.5")):
        values = [h.get(key) for h in history]
        ax_score.plot(epochs, [float("nan") if v is None else v for v in values], "o-", label=name)
    ax_score.set(xlabel="epoch", ylim=(0, 1), title="Validation")
    ax_score.legend()
    return save(fig, path)


def curve_grid(
    curves: dict[str, Any],
    x: str,
    y: str,
    title: str,
    path: Path,
    diagonal: bool = False,
    marker: str = "",
) -> Path:
    """One small panel per biomarker (a DataFrame with columns x, y each)."""
    names = list(curves) or ["(none)"]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        table = curves.get(name)
        if table is not None:
            ax.plot(table[x], table[y], marker=marker or None, lw=1.5)
        else:
            ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center")
        if diagonal:
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set(title=f"{title} {name}", xlabel=x, ylabel=y, xlim=(0, 1), ylim=(0, 1.02))
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return save(fig, path)


def image_gallery(
    rows: dict[str, Sequence[tuple[Any, str]]], columns: int, title: str, path: Path
) -> Path:
    """A grid of images: one row per key (its name on the left), one (RGB or grey array,
    caption) per panel; an empty row says 'none'."""
    columns = max(1, columns)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(2.3 * columns, 2.8 * len(rows)), squeeze=False
    )
    for axes_row, (name, panels) in zip(axes, rows.items(), strict=True):
        for ax in axes_row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for ax, (image, caption) in zip(axes_row, panels, strict=False):  # panels may be fewer
            ax.imshow(image, cmap="gray", vmin=0, vmax=1 if image.dtype.kind == "f" else 255)
            ax.set_title(caption, fontsize=7)
        if not panels:
            axes_row[0].text(0.5, 0.5, "none", ha="center", va="center")
        axes_row[0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
