"""One comparison rule for the paper's tables: a method against a named reference, paired.

Runs are paired when they share every pairing column (the patient split's seed and the
training seed): the same test patients and the same initialisation, so what differs is the
method. Pairs are not always independent: the training seeds of one patient split share its
train and test patients. With a `unit` column (the split), each unit's pairs are averaged
first, and the interval is over the units, the independent replicates. For each comparison
the rule gives the mean paired difference of a metric, its 95 % t-interval over the units
(over the pairs without a unit), the numbers of pairs and units and the two-sided p-value,
Holm-adjusted over the comparisons of one table. The verdict follows from these alone:
"helped" / "hurt" when the Holm-adjusted p-value is below 1 - ci (the interval at the Holm
level excludes 0), else "no clear difference". Fewer than 2 units is never a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

HELPED, HURT, NO_CLEAR = "helped", "hurt", "no clear difference"


@dataclass(frozen=True)
class Paired:
    """A method against its reference on one metric, over paired runs."""

    method: str
    reference: str
    metric: str
    mean: float  # mean of method - reference over the units (each unit's pairs averaged)
    low: float  # 95 % t-interval over the units (unadjusted)
    high: float
    pairs: int
    units: int  # independent replicates the interval is over (the pairs without a unit)
    p: float  # two-sided, unadjusted
    p_holm: float  # Holm-adjusted over the table's comparisons
    verdict: str


def paired_interval(diffs: Sequence[float], ci: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, low, high, p) of paired differences: the t-interval and the two-sided p-value of
    a one-sample t-test against 0. NaN where fewer than 2 pairs; a zero spread gives the point
    as its interval (p 0 unless the mean is 0)."""
    values = np.asarray(diffs, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else float("nan"), *(float("nan"),) * 3
    mean, spread = float(values.mean()), float(values.std(ddof=1))
    if spread <= 1e-12 * max(1.0, abs(mean)):  # identical differences (up to rounding)
        return mean, mean, mean, 1.0 if abs(mean) <= 1e-12 else 0.0
    test = stats.ttest_1samp(values, 0.0)
    interval = test.confidence_interval(confidence_level=ci)
    return mean, float(interval.low), float(interval.high), float(test.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of `p_values`; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(p) if not np.isnan(p[i])]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_comparisons(
    runs: pd.DataFrame,
    comparisons: Sequence[tuple[str, str]],
    metric: str,
    pair_on: Sequence[str],
    method_column: str = "method",
    ci: float = 0.95,
    unit: str | None = None,
) -> list[Paired]:
    """Each (method, reference) of `comparisons` on `metric`, paired on `pair_on`, averaged
    within each level of `unit` (one of `pair_on`) when given, Holm over the list. A comparison
    whose method or reference has no run is left out."""
    if unit is not None and unit not in pair_on:
        raise ValueError(f"unit {unit!r} is not one of the pairing columns {list(pair_on)}")
    wide = runs.pivot_table(index=list(pair_on), columns=method_column, values=metric)
    found = [(m, r) for m, r in comparisons if m in wide.columns and r in wide.columns]
    raw = []
    for method, reference in found:
        both = wide[[method, reference]].dropna()
        diffs = both[method] - both[reference]
        if unit is not None:
            diffs = diffs.groupby(level=unit).mean()
        raw.append((paired_interval(diffs, ci), len(both), len(diffs)))
    adjusted = holm([p for (_, _, _, p), _, _ in raw])
    out = []
    for (method, reference), ((mean, low, high, p), n, units), p_holm in zip(
        found, raw, adjusted, strict=True
    ):
        word = NO_CLEAR
        if units >= 2 and p_holm < 1 - ci:
            word = HELPED if mean > 0 else HURT
        out.append(Paired(method, reference, metric, mean, low, high, n, units, p, p_holm, word))
    return out
