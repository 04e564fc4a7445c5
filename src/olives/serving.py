"""The model as MLflow's pytorch flavour serves it: one flat float32 row per scan.

Input row: the grey image in [0, 1] (H * W values, row-major) at the training size, then the
clinical features (train-standardised values, then missing flags). Output: one probability
per biomarker. Built from the saved bundle on the CPU, so what MLflow stores is exactly the
model file's weights, whatever device trained them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from olives.loader import SplitData, gather, to_unit_float
from olives.models import ModelBundle


class ServingModel(nn.Module):
    """forward(rows [B, H * W + 2C]) -> probabilities [B, L]."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        self.model = bundle.model
        self.height, self.width = bundle.image_size

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        pixels = self.height * self.width
        images = flat[:, :pixels].reshape(-1, 1, self.height, self.width)
        return torch.sigmoid(self.model(images, flat[:, pixels:]))


def serving_rows(data: SplitData, positions: np.ndarray) -> np.ndarray:
    """Flat input rows for the split's `positions` (the MLflow input example)."""
    images = to_unit_float(gather(data.images, data.rows[positions]))
    flat = images.reshape(len(positions), -1).numpy()
    return np.concatenate([flat, data.clinical[positions]], axis=1).astype(np.float32)
