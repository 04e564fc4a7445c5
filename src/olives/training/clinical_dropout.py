"""Clinical dropout: hide the clinical values of a random share of the training rows, exactly as
a scan without a record reaches the model at prediction time (the training median, standardised,
with the missing flag set).

Why: synthetic OLIVES (and most of real OLIVES) has BCVA and CST for every scan, so without it
the missing flags are never 1 in training, and a scan served without values (the Kermany
sample, `olives predict` without `--cst`) gives the model an input it never saw; B5 in particular
leans on CST. Hiding whole records teaches the image branch to carry what the pixels show.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from olives.config import ConfigError


def clinical_fill(clinical: np.ndarray) -> np.ndarray:
    """(C,) standardised value of a missing value: the median of each column over the rows
    where it is present, i.e. the training median `fill_clinical` imputes, standardised."""
    c = clinical.shape[1] // 2
    fill = np.zeros(c, dtype=np.float32)
    for k in range(c):
        present = clinical[clinical[:, c + k] < 0.5, k]
        if present.size:
            fill[k] = np.median(present)
    return fill


class ClinicalDropout(nn.Module):
    """forward(clinical [B, 2C]: values then flags, generator) -> the batch with each row's
    whole record hidden with probability `p` (rows already missing a value stay as they are)."""

    def __init__(self, p: float, fill: np.ndarray) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"train.clinical_dropout must be in [0, 1), got {p}")
        self.p = float(p)
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32).view(1, -1))

    def forward(self, clinical: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.fill.shape[1]
        if self.p == 0.0 or c == 0:
            return clinical
        if clinical.dim() != 2 or clinical.shape[1] != 2 * c:
            want = f"[B, {2 * c}] (values + flags)"
            raise ValueError(f"clinical must be {want}, got {tuple(clinical.shape)}")
        draw = torch.rand(clinical.shape[0], 1, generator=generator, device=clinical.device)
        hide = draw < self.p
        values = torch.where(hide, self.fill.to(clinical.dtype), clinical[:, :c])
        flags = torch.where(hide, torch.ones_like(clinical[:, c:]), clinical[:, c:])
        return torch.cat([values, flags], dim=1)
