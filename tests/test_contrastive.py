"""The supervised contrastive loss and the clinical positives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from olives.training.contrastive import (
    ContrastiveConfigError,
    clinical_loss,
    label_codes,
    positive_codes,
    supcon_loss,
)


def two_scans() -> torch.Tensor:
    """Scan 0's two views point along x, scan 1's along y."""
    return torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])


def test_hand_computed_case_with_different_labels():
    # Anchor x: similarities 1 (its own view), 0, 0 (scan 1) at T = 1, one positive:
    # -log(e / (e + 2)) = log(e + 2) - 1; the four anchors are alike.
    loss = supcon_loss(two_scans(), torch.tensor([0, 1]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)


def test_hand_computed_case_with_one_label():
    # Same label: three positives with log-probabilities 1 - L, -L, -L (L = log(e + 2)).
    loss = supcon_loss(two_scans(), torch.tensor([4, 4]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1 / 3, abs=1e-6)


def loop_reference(features: torch.Tensor, codes: torch.Tensor, t: float) -> float:
    """Khosla et al. eq. 2 written with loops over anchors and positives."""
    z = torch.nn.functional.normalize(features.double(), dim=-1)
    views = [(i, v) for v in range(z.shape[1]) for i in range(z.shape[0])]
    total = 0.0
    for i, v in views:
        others = [(j, w) for j, w in views if (j, w) != (i, v)]
        denom = sum(math.exp(float(z[i, v] @ z[j, w]) / t) for j, w in others)
        positives = [(j, w) for j, w in others if codes[j] == codes[i]]
        total += -sum(
            math.log(math.exp(float(z[i, v] @ z[j, w]) / t) / denom) for j, w in positives
        ) / len(positives)
    return total / len(views)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 2, 5, generator=g)
    codes = torch.tensor([0, 1, 0, 2, 1, 3])
    got = supcon_loss(features, codes, temperature=0.1).item()
    assert got == pytest.approx(loop_reference(features, codes, 0.1), rel=1e-5)


def test_sum_over_kinds_and_gradients_flow():
    features = torch.randn(4, 2, 3, requires_grad=True)
    codes = torch.tensor([[0, 1], [0, 1], [1, 1], [2, 0]])
    loss = clinical_loss(features, codes, 0.5)
    expected = supcon_loss(features, codes[:, 0], 0.5) + supcon_loss(features, codes[:, 1], 0.5)
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_label_codes_bins_and_missing_values():
    codes = label_codes([300.0, 310.0, 326.0, np.nan, np.nan, 300.0], bin_width=25.0)
    assert codes[0] == codes[1] == codes[5] and codes[2] != codes[0]
    assert len({codes[3], codes[4]} | set(codes[:3])) == 4  # each NaN is alone
    assert label_codes([70, 70, 85]).tolist() == [0, 0, 1]


def test_positive_codes_per_kind_and_errors():
    frame = pd.DataFrame(
        {"BCVA": [70, 70, 80], "CST": [300, 320, 400], "Patient_ID": ["01-1", "01-1", "02"]}
    )
    frame["eye"] = ["a", "b", "c"]
    codes = positive_codes(frame, ["bcva", "patient"], "Patient_ID", cst_bin=25.0)
    assert codes[:, 0].tolist() == [0, 0, 1] and codes[:, 1].tolist() == [0, 0, 1]
    with pytest.raises(
        ContrastiveConfigError, match=r"pretrain.positives must be .* got \['age'\]"
    ):
        positive_codes(frame, ["age"], "Patient_ID", 25.0)
    with pytest.raises(ContrastiveConfigError, match="the data lack 'eye'"):
        positive_codes(frame.drop(columns="eye"), ["eye"], "Patient_ID", 25.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="views >= 2"):
        supcon_loss(torch.randn(3, 1, 4), torch.zeros(3, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        supcon_loss(torch.randn(3, 2, 4), torch.zeros(3, dtype=torch.long), 0.0)
