"""Supervised contrastive learning with clinical labels (Khosla et al., NeurIPS 2020), as the
OLIVES authors pre-train on BCVA / CST (Kokilepersaud et al., IEEE JBHI 2023).

Each scan comes in two augmented views. For an anchor view, the positives are every other view
whose clinical label equals the anchor's (always including the anchor's own second view); the
loss is the mean, over anchors, of minus the mean log-softmax similarity of its positives
against every other view. Several label kinds (`bcva`, `cst`, `eye`, `patient`) add one loss
each, as in the authors' code. A scan whose label is missing (NaN) has only its own second view
as a positive: for it the loss is SimCLR's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from olives.errors import InputError

POSITIVES = ("bcva", "cst", "eye", "patient")


class ContrastiveConfigError(InputError, ValueError):
    """A positive kind or a contrastive setting that cannot work."""


def supcon_loss(features: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of `features` [B, V, D] (L2-normalised here) with integer
    label `codes` [B]; views of one scan and scans with equal codes are positives."""
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"features must be [batch, views >= 2, dim], got {tuple(features.shape)}")
    if codes.shape != features.shape[:1]:
        raise ValueError(f"codes must be [{features.shape[0]}], got {tuple(codes.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch, views, _ = features.shape
    z = F.normalize(features.float(), dim=-1).transpose(0, 1).reshape(batch * views, -1)
    ids = codes.repeat(views)
    itself = torch.eye(batch * views, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (ids[:, None] == ids[None, :]) & ~itself
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)
    return -per_anchor.mean()


def label_codes(values: Sequence[float] | np.ndarray, bin_width: float | None = None) -> np.ndarray:
    """Integer codes of clinical values: equal values (or equal bins of `bin_width`) share a
    code; a missing value gets a code of its own, so it is nobody's positive."""
    x = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce").to_numpy(
        dtype=np.float64
    )
    if bin_width is not None:
        x = np.floor(x / bin_width)
    known = ~np.isnan(x)
    out = np.empty(len(x), dtype=np.int64)
    _, out[known] = np.unique(x[known], return_inverse=True)
    out[~known] = int(out[known].max(initial=-1)) + 1 + np.arange(int((~known).sum()))
    return out


def positive_codes(
    frame: pd.DataFrame,
    kinds: Sequence[str],
    patient_column: str,
    cst_bin: float,
    eye_column: str = "eye",
) -> np.ndarray:
    """`[rows, kinds]` label codes for each positive kind (`POSITIVES`)."""
    unknown = [k for k in kinds if k not in POSITIVES]
    if unknown or not kinds:
        raise ContrastiveConfigError(
            f"pretrain.positives must be a non-empty list of {list(POSITIVES)}, got {list(kinds)}"
        )
    sources = {
        "bcva": ("BCVA", None),
        "cst": ("CST", cst_bin),
        "patient": (patient_column, None),
        "eye": (eye_column, None),
    }
    columns = []
    for kind in kinds:
        column, width = sources[kind]
        if column not in frame:
            raise ContrastiveConfigError(
                f"pretrain.positives has {kind!r}, the data lack {column!r}"
            )
        values = frame[column]
        if kind in ("patient", "eye"):  # ids may be text: code them as text
            values = pd.Series(pd.factorize(values.astype(str))[0], index=frame.index)
            values = values.where(frame[column].notna())
        columns.append(label_codes(values.to_numpy(), width))
    return np.stack(columns, axis=1)


class ProjectionHead(nn.Module):
    """The MLP on top of the pooled backbone features that the contrastive loss sees (and that
    is dropped after pre-training): Linear -> ReLU -> Linear, as in SupCon's ResNet heads."""

    def __init__(self, in_features: int, dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def clinical_loss(projected: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sum over the positive kinds (columns of `codes` [B, K]) of `supcon_loss`."""
    return sum(
        (supcon_loss(projected, codes[:, k], temperature) for k in range(codes.shape[1])),
        start=projected.new_zeros(()),
    )
