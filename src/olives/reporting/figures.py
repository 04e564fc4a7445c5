"""Matplotlib figures shared by the train, evaluate and report stages (Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
        ax_score.plot(epochs, [float("nan") if v is None else v for v in values], "o-",
                      label=name)
    ax_score.set(xlabel="epoch", ylim=(0, 1), title="Validation")
    ax_score.legend()
    return save(fig, path)
