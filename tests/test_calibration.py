"""Temperature scaling, ECE and Brier against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from olives.evaluation.calibration import (
    calibrated,
    calibration_table,
    expected_calibration_error,
    fit_temperatures,
)


def test_ece_on_a_hand_made_case():
    # bin [0.1, 0.2): p = 0.1, 0.1, truth 0, 1 -> |0.5 - 0.1| ; bin [0.9, 1]: p = 0.9, 1.0,
    # truth 1, 1 -> |1 - 0.95|. ECE = 2/4 * 0.4 + 2/4 * 0.05 = 0.225
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 1.0])
    assert expected_calibration_error(y, p) == pytest.approx(0.225)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_an_overconfident_model_gets_its_temperature_back():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(20_000, 2))
    y = (rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(float)
    overconfident = true_logits * np.array([3.0, 0.5])  # T = 3 and T = 0.5 undo it
    temperatures = fit_temperatures(overconfident, y)
    np.testing.assert_allclose(temperatures, [3.0, 0.5], rtol=0.05)
    before = expected_calibration_error(y[:, 0], calibrated(overconfident, np.ones(2))[:, 0])
    after = expected_calibration_error(y[:, 0], calibrated(overconfident, temperatures)[:, 0])
    assert after < 0.02 < before


def test_scaling_keeps_the_ranking_and_a_single_class_keeps_t_1():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 2))
    y = np.stack([(z[:, 0] + rng.normal(size=200) > 0), np.zeros(200)], axis=1).astype(float)
    t = fit_temperatures(z, y)
    assert t[1] == 1.0
    p = calibrated(z, t)
    assert roc_auc_score(y[:, 0], p[:, 0]) == pytest.approx(roc_auc_score(y[:, 0], z[:, 0]))


def test_calibration_table_matches_sklearn_brier():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 1))
    y = (rng.random((300, 1)) < 0.3).astype(float)
    table = calibration_table(y, z, np.array([2.0]), ("B1",))["B1"]
    assert table["temperature"] == 2.0
    assert table["brier_raw"] == pytest.approx(
        brier_score_loss(y[:, 0], 1 / (1 + np.exp(-z[:, 0])))
    )
    assert table["brier"] == pytest.approx(brier_score_loss(y[:, 0], calibrated(z, [2.0])[:, 0]))
