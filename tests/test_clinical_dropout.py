"""Clinical dropout: a hidden record is exactly what prediction feeds for a scan without one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from olives.config import ConfigError
from olives.data.prepare import Columns, clinical_features, fill_clinical, train_statistics
from olives.training.clinical_dropout import ClinicalDropout, clinical_fill

NAMES = ("BCVA", "CST")


def _frame(n: int = 41, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "split": "train",
            "BCVA": rng.integers(20, 95, n).astype(float),
            "CST": rng.normal(330, 110, n).round(),
            "B1": rng.integers(0, 2, n),
        }
    )


def _features(frame: pd.DataFrame, stats: dict) -> np.ndarray:
    cols = Columns(image="", labels=("B1",), clinical=NAMES, patient="", eye=None)
    return clinical_features(fill_clinical(frame.copy(), stats, cols), NAMES)


@pytest.mark.parametrize("n", [41, 40])  # odd and even: the median of two middle values
def test_a_hidden_record_equals_the_prediction_time_imputation(n: int) -> None:
    frame = _frame(n)
    frame.loc[3, "CST"] = np.nan  # a row already missing a value
    cols = Columns(image="", labels=("B1",), clinical=NAMES, patient="", eye=None)
    stats = train_statistics(frame, cols)
    features = _features(frame, stats)
    blank = frame.copy()
    blank[list(NAMES)] = np.nan
    expected = _features(blank, stats)  # what `olives predict` feeds without BCVA and CST

    drop = ClinicalDropout(0.999, clinical_fill(features))
    out = drop(torch.from_numpy(features), torch.Generator().manual_seed(0)).numpy()
    hidden = out[:, 2:].sum(axis=1) == 2
    assert hidden.sum() >= n - 2
    np.testing.assert_allclose(out[hidden], expected[hidden], rtol=0, atol=1e-6)


def test_share_of_hidden_rows_seeded_and_rows_missing_stay() -> None:
    features = np.tile(np.array([[0.5, -1.0, 0.0, 0.0]], dtype=np.float32), (4000, 1))
    features[:10, 1], features[:10, 3] = 0.0, 1.0  # CST missing in the first ten rows
    drop = ClinicalDropout(0.25, np.array([0.1, 0.2], dtype=np.float32))
    first = drop(torch.from_numpy(features), torch.Generator().manual_seed(7))
    again = drop(torch.from_numpy(features), torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    hidden = (first[:, 2] == 1) & (first[:, 3] == 1)
    assert 0.22 < hidden[10:].float().mean().item() < 0.28
    kept = first[10:][~hidden[10:]]
    assert torch.equal(kept, torch.from_numpy(features[10:11]).expand_as(kept))
    assert (first[:10, 3] == 1).all()  # a missing value is never un-hidden


def test_off_is_identity_and_bad_shares_are_refused() -> None:
    x = torch.randn(5, 4)
    assert ClinicalDropout(0.0, np.zeros(2))(x, torch.Generator()) is x
    for p in (-0.1, 1.0, 2.0):
        with pytest.raises(ConfigError, match=r"train\.clinical_dropout"):
            ClinicalDropout(p, np.zeros(2))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        ClinicalDropout(0.5, np.zeros(2))(torch.zeros(5, 3), torch.Generator())
