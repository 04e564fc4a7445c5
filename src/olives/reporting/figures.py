"""Matplotlib figures shared by the train, evaluate and report stages (Agg backend, PNG)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The error gallery: panel width, caption size and one caption line's height (inches, points).
PANEL_IN = 2.3
CAPTION_PT = 7.0
LINE_IN = 1.3 * CAPTION_PT / 72


def save(fig: plt.Figure, path: Path) -> Path:
    """Write a PNG; a figure without a layout engine of its own gets `tight_layout`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
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
    """`gallery` saved as a PNG."""
    return save(gallery(rows, columns, title), path)


def wrap_caption(caption: str, width_in: float = PANEL_IN, size_pt: float = CAPTION_PT) -> str:
    """Each line of `caption` wrapped to a panel's width. Characters are counted at 0.6 em
    (wider than DejaVu Sans' average), so a wrapped line is narrower than its panel."""
    chars = max(8, int(width_in * 72 / (0.6 * size_pt)))
    return "\n".join(textwrap.fill(line, chars) or line for line in caption.split("\n"))


def gallery(rows: dict[str, Sequence[tuple[Any, str]]], columns: int, title: str) -> plt.Figure:
    """A grid of images: one row per key (its name on the left), one (RGB or grey array,
    caption) per panel; an empty row says 'none'.

    Captions never overlap: they are wrapped to the panel's width, each row is as tall as its
    tallest image plus its longest caption, and constrained layout keeps every caption clear
    of the images and captions around it.
    """
    columns = max(1, columns)
    captions = {name: [wrap_caption(c) for _, c in panels] for name, panels in rows.items()}
    heights = [
        PANEL_IN * max((_aspect(image) for image, _ in panels), default=1.0)
        + LINE_IN * max((c.count("\n") + 1 for c in captions[name]), default=1)
        + 0.1
        for name, panels in rows.items()
    ]
    fig = plt.figure(
        figsize=(PANEL_IN * columns + 0.4, sum(heights) + 0.4 * bool(title)), layout="constrained"
    )
    axes = fig.subplots(len(rows), columns, squeeze=False, height_ratios=heights)
    for axes_row, (name, panels) in zip(axes, rows.items(), strict=True):
        for ax in axes_row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for ax, (image, _), caption in zip(axes_row, panels, captions[name], strict=False):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1 if image.dtype.kind == "f" else 255)
            ax.set_title(caption, fontsize=CAPTION_PT)
        if not panels:
            axes_row[0].text(0.5, 0.5, "none", ha="center", va="center")
        axes_row[0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def _aspect(image: Any) -> float:
    """Height over width of an image array."""
    return image.shape[0] / max(1, image.shape[1])
