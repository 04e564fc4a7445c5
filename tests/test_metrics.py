"""Metrics against hand-computed cases and scikit-learn; the vectorised patient bootstrap against
scikit-learn run on physically resampled rows."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    recall_score,
    roc_auc_score,
)

from olives.evaluation.intervals import (
    bootstrap_ci,
    bootstrap_metrics,
    bootstrap_replicates,
    draw_patients,
    evaluate_predictions,
    percentile_interval,
)
from olives.evaluation.metrics import (
    image_f1_scores,
    per_label_metrics,
    summary_metrics,
    tune_thresholds,
    vip_phase1,
    vip_phase2,
)

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def synthetic(
    n_patients: int, images_per_patient: int = 20, labels: int = 6, seed: int = 0, decimals=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlated-within-patient labels and informative scores (same signal for any size)."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), images_per_patient)
    logit = rng.normal(size=(n_patients, labels))[patients] + rng.normal(
        size=(patients.size, labels)
    )
    y_true = (rng.random(logit.shape) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    y_prob = 1 / (1 + np.exp(-(0.8 * logit + rng.normal(size=logit.shape))))
    if decimals is not None:
        y_prob = np.round(y_prob, decimals)  # creates ties
    return y_true, y_prob, patients


def _or_nan(fn):
    """Wrap a scikit-learn metric so an undefined resample gives NaN instead of raising."""

    def wrapped(t, s, ids):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return fn(t, s, ids)
            except ValueError:
                return None

    return wrapped


# ---------------------------------------------------------------------------------------------
# Per-label metrics
# ---------------------------------------------------------------------------------------------


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Column 0 is computed by hand below; column 1 has no positive; column 2 no negative."""
    y_true = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    y_prob = np.array(
        [
            [0.9, 0.1, 0.7],
            [0.4, 0.2, 0.6],
            [0.6, 0.3, 0.8],
            [0.1, 0.1, 0.2],
            [0.8, 0.4, 0.9],
            [0.3, 0.2, 0.3],
        ]
    )
    return y_true, y_prob


def test_per_label_metrics_match_hand_computation() -> None:
    y_true, y_prob = hand_case()
    table = per_label_metrics(y_true, y_prob, np.full(3, 0.5), ["A", "B", "C"])
    a = table.loc["A"]
    # decisions at 0.5: [1, 0, 1, 0, 1, 0] -> tp=2, fn=1, fp=1, tn=2
    assert (a["n_pos"], a["n_neg"], a["prevalence"]) == (3, 3, 0.5)
    assert a["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert a["sensitivity"] == pytest.approx(2 / 3)
    assert a["specificity"] == pytest.approx(2 / 3)
    # positives 0.9, 0.8, 0.4 vs negatives 0.6, 0.3, 0.1: 3 + 3 + 2 of 9 pairs ordered
    assert a["auroc"] == pytest.approx(8 / 9)
    # ranked P P N P N N: precision 1, 1, 3/4 at the three positives
    assert a["average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert a["note"] == ""


def test_undefined_metrics_are_nan_with_a_reason_never_a_crash() -> None:
    y_true, y_prob = hand_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn warning leaks either
        table = per_label_metrics(y_true, y_prob, np.full(3, 0.5), ["A", "B", "C"])
    b, c = table.loc["B"], table.loc["C"]
    assert math.isnan(b["auroc"]) and math.isnan(b["average_precision"])
    assert math.isnan(b["sensitivity"]) and math.isnan(b["f1"])  # nothing true, nothing predicted
    assert b["specificity"] == 1.0
    assert "no positive" in b["note"] and "AUROC" in b["note"] and "F1 undefined" in b["note"]
    assert math.isnan(c["auroc"]) and math.isnan(c["specificity"])
    assert c["average_precision"] == 1.0  # defined: every ranked item is a positive
    assert "no negative" in c["note"]


def test_per_label_metrics_match_sklearn_on_random_data() -> None:
    y_true, y_prob, _ = synthetic(15, seed=3)
    thr = np.linspace(0.3, 0.7, 6)
    table = per_label_metrics(y_true, y_prob, thr, LABELS)
    for j, name in enumerate(LABELS):
        t, p, d = y_true[:, j], y_prob[:, j], (y_prob[:, j] >= thr[j]).astype(int)
        row = table.loc[name]
        assert row["auroc"] == pytest.approx(roc_auc_score(t, p), abs=1e-12)
        assert row["average_precision"] == pytest.approx(average_precision_score(t, p), abs=1e-12)
        assert row["f1"] == pytest.approx(f1_score(t, d), abs=1e-12)
        assert row["f1_at_0.5"] == pytest.approx(f1_score(t, p >= 0.5), abs=1e-12)
        assert row["sensitivity"] == pytest.approx(recall_score(t, d), abs=1e-12)
        assert row["specificity"] == pytest.approx(recall_score(1 - t, 1 - d), abs=1e-12)
        assert row["threshold"] == thr[j]


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuned_thresholds_maximise_f1_against_brute_force(seed: int) -> None:
    y_true, y_prob, _ = synthetic(8, images_per_patient=15, seed=seed, decimals=2)
    thr = tune_thresholds(y_true, y_prob)
    for j in range(y_true.shape[1]):
        t, p = y_true[:, j], y_prob[:, j]
        candidates = np.append(np.unique(p), p.max() + 1.0)
        scores = np.array([f1_score(t, p >= c, zero_division=0) for c in candidates])
        assert f1_score(t, p >= thr[j]) == pytest.approx(scores.max(), abs=1e-12)
        # ties go to the lowest threshold achieving the maximum
        assert thr[j] == candidates[np.flatnonzero(np.isclose(scores, scores.max()))[0]]


def test_tune_thresholds_label_without_positive_gets_default() -> None:
    y_true, y_prob = hand_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thr = tune_thresholds(y_true, y_prob)
    assert thr[1] == 0.5
    assert thr[2] == y_prob[:, 2].min()  # all positive: predicting all of them is best
    assert thr[0] == 0.4  # the lowest score at which all 3 positives are caught with 1 FP


# ---------------------------------------------------------------------------------------------
# VIP Cup scores
# ---------------------------------------------------------------------------------------------


def test_vip_phase1_is_pooled_macro_f1_with_zero_division_zero() -> None:
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    y_pred = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # label 0: tp=1 fn=1 -> 2/3; label 1: tp=1 fp=1 -> 2/3; label 2: nothing true/predicted -> 0
    assert vip_phase1(y_true, y_pred) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_vip_phase2_hand_computed() -> None:
    y_true = np.array(
        [[1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    )
    y_pred = np.array(
        [[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0]]
    )
    patients = np.array(["X", "X", "Y", "Y"])
    # image 1: perfect -> 1. image 2: class "present" F1 0, class "absent" tp=5 fp=1 -> 10/11.
    # image 3: only class "absent", perfect -> 1. image 4: present tp=1 fp=1 fn=1 -> 1/2,
    # absent tp=3 fp=1 fn=1 -> 3/4.
    expected_images = [1.0, (0 + 10 / 11) / 2, 1.0, (1 / 2 + 3 / 4) / 2]
    np.testing.assert_allclose(image_f1_scores(y_true, y_pred), expected_images)
    x, y = (1.0 + 5 / 11) / 2, (1.0 + 5 / 8) / 2
    assert vip_phase2(y_true, y_pred, patients) == pytest.approx((x + y) / 2)


def test_image_f1_scores_match_the_organisers_per_row_loop() -> None:
    y_true, y_prob, _ = synthetic(10, seed=5)
    y_pred = (y_prob >= 0.5).astype(int)
    reference = [f1_score(t, d, average="macro") for t, d in zip(y_true, y_pred, strict=True)]
    np.testing.assert_allclose(image_f1_scores(y_true, y_pred), reference, atol=1e-12)


def test_vip_phase2_weights_patients_not_images() -> None:
    y_true = np.array([[1, 0]] * 3 + [[1, 0]])
    y_pred = np.array([[1, 0]] * 3 + [[0, 1]])  # 3 perfect images of P1, 1 wrong image of P2
    assert vip_phase2(y_true, y_pred, np.array([1, 1, 1, 2])) == pytest.approx(0.5)
    assert vip_phase2(y_true, y_pred, np.arange(4)) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def test_summary_macro_skips_undefined_labels_and_micro_matches_sklearn() -> None:
    y_true, y_prob, patients = synthetic(12, seed=2)
    y_true[:, 3] = 0  # label B4 has no positive
    thr = tune_thresholds(y_true, y_prob)
    table = per_label_metrics(y_true, y_prob, thr, LABELS)
    summary = summary_metrics(y_true, y_prob, thr, patients, per_label=table)
    defined = [j for j in range(6) if j != 3]
    aurocs = [roc_auc_score(y_true[:, j], y_prob[:, j]) for j in defined]
    assert summary["macro"]["auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12)
    assert summary["macro"]["auroc_n_labels"] == 5
    decisions = (y_prob >= thr).astype(int)
    assert summary["micro"]["auroc"] == pytest.approx(roc_auc_score(y_true.ravel(), y_prob.ravel()))
    assert summary["micro"]["average_precision"] == pytest.approx(
        average_precision_score(y_true.ravel(), y_prob.ravel())
    )
    assert summary["micro"]["f1"] == pytest.approx(f1_score(y_true, decisions, average="micro"))
    assert summary["vip_phase1"] == pytest.approx(
        f1_score(y_true, decisions, average="macro", zero_division=0)
    )


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_draws_resample_patients_with_replacement_deterministically() -> None:
    draws = draw_patients(7, 50, seed=3)
    assert draws.shape == (50, 7) and draws.min() >= 0 and draws.max() < 7
    np.testing.assert_array_equal(draws, draw_patients(7, 50, seed=3))
    assert not np.array_equal(draws, draw_patients(7, 50, seed=4))
    assert any(len(set(row)) < 7 for row in draws)  # some patient drawn twice


def test_vectorised_replicates_equal_sklearn_on_resampled_rows() -> None:
    y_true, y_prob, patients = synthetic(9, images_per_patient=12, seed=4, decimals=1)
    y_true[:, 4] = 0
    y_true[patients == 2, 4] = 1  # B5 positive in one patient only: often undefined
    thr = tune_thresholds(y_true, y_prob)
    n, seed = 25, 11
    boot = bootstrap_metrics(y_true, y_prob, thr, patients, LABELS, n, seed)
    half = np.full(6, 0.5)
    references = {
        "B5.auroc": lambda t, s, _: roc_auc_score(t[:, 4], s[:, 4]),
        "B5.average_precision": lambda t, s, _: (
            average_precision_score(t[:, 4], s[:, 4]) if t[:, 4].any() else None
        ),
        "B2.auroc": lambda t, s, _: roc_auc_score(t[:, 1], s[:, 1]),
        "B2.average_precision": lambda t, s, _: average_precision_score(t[:, 1], s[:, 1]),
        "B1.f1": lambda t, s, _: f1_score(t[:, 0], s[:, 0] >= thr[0], zero_division=np.nan),
        "B5.sensitivity": lambda t, s, _: recall_score(
            t[:, 4], s[:, 4] >= thr[4], zero_division=np.nan
        ),
        "B3.specificity": lambda t, s, _: recall_score(
            1 - t[:, 2], s[:, 2] < thr[2], zero_division=np.nan
        ),
        "micro.auroc": lambda t, s, _: roc_auc_score(t.ravel(), s.ravel()),
        "micro.average_precision": lambda t, s, _: average_precision_score(t.ravel(), s.ravel()),
        "micro.f1_at_0.5": lambda t, s, _: f1_score(t, s >= half, average="micro"),
        "macro.auroc": lambda t, s, _: np.mean([roc_auc_score(t[:, j], s[:, j]) for j in range(6)]),
        "vip_phase1": lambda t, s, _: vip_phase1(t, s >= thr),
        "vip_phase2": lambda t, s, ids: vip_phase2(t, s >= thr, ids),
    }
    for key, fn in references.items():
        ref = bootstrap_replicates(_or_nan(fn), y_true, y_prob, patients, n, seed)
        np.testing.assert_allclose(boot[key], ref, atol=1e-12, err_msg=key)
    assert np.isnan(boot["B5.auroc"]).any() and not np.isnan(boot["B5.auroc"]).all()


def test_ci_contains_point_estimate_and_narrows_with_more_patients() -> None:
    widths = {}
    for n_patients in (10, 200):
        y_true, y_prob, patients = synthetic(n_patients, images_per_patient=5, seed=1)
        thr = tune_thresholds(y_true, y_prob)
        result = evaluate_predictions(y_true, y_prob, thr, patients, LABELS, 200, 0.95, 0)
        for key in ("vip_phase1", "vip_phase2"):
            low, high = result[f"{key}_ci"]
            assert low <= result[key] <= high
        low, high = result["macro"]["auroc_ci"]
        assert low <= result["macro"]["auroc"] <= high
        widths[n_patients] = high - low
    assert widths[200] < widths[10] / 2  # ~sqrt(20) narrower in theory


def test_bootstrap_ci_generic_is_deterministic_and_contains_estimate() -> None:
    y_true, y_prob, patients = synthetic(20, images_per_patient=5, seed=6)

    def auroc(t, s, _):
        return roc_auc_score(t[:, 0], s[:, 0])

    first = bootstrap_ci(auroc, y_true, y_prob, patients, n=60, ci=0.9, seed=5)
    again = bootstrap_ci(auroc, y_true, y_prob, patients, n=60, ci=0.9, seed=5)
    other = bootstrap_ci(auroc, y_true, y_prob, patients, n=60, ci=0.9, seed=6)
    assert first == again and first != other
    assert first.low <= roc_auc_score(y_true[:, 0], y_prob[:, 0]) <= first.high
    assert (first.n_used, first.n_resamples) == (60, 60)


def test_undefined_resamples_are_skipped_and_counted() -> None:
    y_true, y_prob, patients = synthetic(10, images_per_patient=8, seed=7)
    y_true[:, 5] = 0
    y_true[patients == 4, 5] = 1  # B6 positive only in patient 4
    thr = tune_thresholds(y_true, y_prob)
    n, seed = 200, 9
    result = evaluate_predictions(y_true, y_prob, thr, patients, LABELS, n, 0.95, seed)
    drew_patient_4 = int((draw_patients(10, n, seed) == 4).any(axis=1).sum())
    assert 0 < drew_patient_4 < n
    assert result["bootstrap"]["n_used"]["B6.auroc"] == drew_patient_4
    assert result["bootstrap"]["n_used"]["macro.auroc"] == drew_patient_4
    assert result["bootstrap"]["n_used"]["B1.auroc"] == n
    assert percentile_interval(np.full(5, np.nan), 0.95).low is None


def test_evaluate_predictions_is_json_ready_with_none_for_undefined() -> None:
    y_true, y_prob, patients = synthetic(12, seed=8)
    y_true[:, 2] = 0  # B3: no positive
    thr = tune_thresholds(y_true, y_prob)
    result = evaluate_predictions(y_true, y_prob, thr, patients, LABELS, 50, 0.9, 3)
    text = json.dumps(result, allow_nan=False)  # raises on NaN
    assert json.loads(text) == result
    b3 = result["per_label"]["B3"]
    assert b3["auroc"] is None and b3["auroc_ci"] is None and "no positive" in b3["note"]
    assert result["macro"]["auroc_n_labels"] == 5
    b1 = result["per_label"]["B1"]
    assert b1["auroc"] == pytest.approx(roc_auc_score(y_true[:, 0], y_prob[:, 0]))
    assert b1["auroc_ci"][0] <= b1["auroc"] <= b1["auroc_ci"][1]
    assert result["n_patients"] == 12 and result["bootstrap"]["unit"] == "patient"
    same = evaluate_predictions(y_true, y_prob, thr, patients, LABELS, 50, 0.9, 3)
    assert same == result
    no_boot = evaluate_predictions(y_true, y_prob, thr, patients, LABELS, 0, 0.9, 3)
    assert no_boot["vip_phase1"] == result["vip_phase1"] and no_boot["vip_phase1_ci"] is None


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "y_prob": a["y_prob"][:, :5]}, "y_prob has shape"),
        (lambda a: {**a, "y_true": a["y_true"] * 2}, "y_true must hold only 0/1"),
        (lambda a: {**a, "y_prob": np.where(a["y_prob"] > 0.9, np.nan, a["y_prob"])}, "finite"),
        (lambda a: {**a, "thresholds": np.full(5, 0.5)}, "thresholds must have 6"),
        (lambda a: {**a, "labels": LABELS[:5]}, "labels has 5 names"),
        (lambda a: {**a, "patients": a["patients"][:-1]}, "patients has"),
        (lambda a: {**a, "ci": 95.0}, "ci must be in"),
        (lambda a: {**a, "y_true": a["y_true"][:, 0]}, "y_true must be 2-D"),
    ],
)
def test_bad_input_raises_naming_the_parameter(change, message: str) -> None:
    y_true, y_prob, patients = synthetic(4, images_per_patient=10, seed=0)
    args = {"y_true": y_true, "y_prob": y_prob, "thresholds": np.full(6, 0.5)}
    args |= {"patients": patients, "labels": LABELS, "n_boot": 5, "ci": 0.95, "seed": 0}
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(**change(args))
