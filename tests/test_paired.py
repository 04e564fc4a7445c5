"""The paper's comparison rule (`olives.evaluation.paired`), against scipy's paired t-test and
Holm's procedure worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from olives.evaluation.paired import (
    HELPED,
    HURT,
    NO_CLEAR,
    holm,
    paired_comparisons,
    paired_interval,
)


def test_the_interval_and_p_are_scipys_paired_t_test():
    method = np.array([0.72, 0.70, 0.75, 0.69, 0.74])
    reference = np.array([0.68, 0.69, 0.70, 0.66, 0.71])
    mean, low, high, p = paired_interval(method - reference)
    test = stats.ttest_rel(method, reference)
    half = stats.t.ppf(0.975, df=4) * np.std(method - reference, ddof=1) / math.sqrt(5)
    assert mean == pytest.approx(0.032)
    assert (low, high) == pytest.approx((mean - half, mean + half))
    assert p == pytest.approx(test.pvalue)


def test_the_issues_three_seed_example_is_no_clear_difference():
    """Issue 28: student - single paired by seed +0.077, +0.014, +0.029; interval
    [-0.042, +0.121] over 3 pairs, so no verdict."""
    mean, low, high, _ = paired_interval([0.077, 0.014, 0.029])  # rounded as the issue gives
    assert (mean, low, high) == pytest.approx((0.040, -0.042, 0.121), abs=0.002)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert math.isnan(holm([float("nan"), 0.01])[0]) and holm([float("nan"), 0.01])[1] == 0.01


def test_too_few_pairs_and_no_spread():
    assert all(math.isnan(v) for v in paired_interval([0.1])[1:])
    assert paired_interval([0.1, 0.1, 0.1]) == pytest.approx((0.1, 0.1, 0.1, 0.0))
    assert paired_interval([0.0, 0.0]) == (0.0, 0.0, 0.0, 1.0)


def runs_table(gaps: dict[str, list[float]], pairs: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = 0.7 + rng.normal(0, 0.02, pairs)
    rows = [
        {"method": "single", "split": i // 2, "seed": i % 2, "auc": b} for i, b in enumerate(base)
    ]
    for method, gap in gaps.items():
        rows += [
            {"method": method, "split": i // 2, "seed": i % 2, "auc": b + g}
            for i, (b, g) in enumerate(zip(base, gap, strict=True))
        ]
    return pd.DataFrame(rows)


def test_verdicts_follow_the_holm_adjusted_interval():
    up = [0.05, 0.06, 0.05, 0.07, 0.06, 0.05]
    down = [-g for g in up]
    noise = [0.03, -0.02, 0.01, -0.03, 0.02, -0.01]
    runs = runs_table({"a": up, "b": down, "c": noise})
    pairs = [("a", "single"), ("b", "single"), ("c", "single"), ("missing", "single")]
    found = paired_comparisons(runs, pairs, "auc", pair_on=["split", "seed"])
    assert [(c.method, c.verdict, c.pairs) for c in found] == [
        ("a", HELPED, 6),
        ("b", HURT, 6),
        ("c", NO_CLEAR, 6),
    ]
    assert all(c.p_holm >= c.p for c in found)
    assert found[0].low > 0 > found[1].high and found[2].low < 0 < found[2].high


def test_runs_pair_on_every_pairing_column():
    """A run of another split is no pair for the same seed: an unpaired run is left out."""
    runs = runs_table({"a": [0.05] * 6})
    runs = runs[~((runs["method"] == "a") & (runs["split"] == 2))]
    (found,) = paired_comparisons(runs, [("a", "single")], "auc", pair_on=["split", "seed"])
    assert found.pairs == 4 and found.mean == pytest.approx(0.05)


def test_with_a_unit_the_interval_is_over_the_units_means():
    """Two seeds of a split share its patients: the split's mean difference is the replicate,
    so 6 pairs in 3 splits give a t-interval with 2 degrees of freedom, not 5."""
    gap = [0.05, 0.07, 0.01, 0.03, 0.06, 0.02]
    runs = runs_table({"a": gap})
    (by_pair,) = paired_comparisons(runs, [("a", "single")], "auc", pair_on=["split", "seed"])
    (by_split,) = paired_comparisons(
        runs, [("a", "single")], "auc", pair_on=["split", "seed"], unit="split"
    )
    means = [0.06, 0.02, 0.04]  # each split's two seeds averaged
    test = stats.ttest_1samp(means, 0.0)
    interval = test.confidence_interval(0.95)
    assert (by_split.pairs, by_split.units) == (6, 3) and (by_pair.pairs, by_pair.units) == (6, 6)
    assert by_split.mean == pytest.approx(np.mean(gap)) == pytest.approx(by_pair.mean)
    assert (by_split.low, by_split.high) == pytest.approx((interval.low, interval.high))
    assert by_split.p == pytest.approx(test.pvalue)
    assert by_split.high - by_split.low > by_pair.high - by_pair.low  # fewer replicates
    with pytest.raises(ValueError, match=r"unit 'fold' is not one of the pairing columns"):
        paired_comparisons(runs, [("a", "single")], "auc", pair_on=["split", "seed"], unit="fold")
