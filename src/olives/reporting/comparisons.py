"""A table's paired comparisons, by its protocol (`olives.reporting.protocol`) and the one rule
of `olives.evaluation.paired`: each method against its reference, paired on the protocol's
columns (patient split and training seed), a t-interval over the pairs, Holm over the table's
comparisons per metric, and the verdict word from the adjusted p-value alone.

The numbers are formatted once (`formatted`); the Markdown table, the LaTeX table and the
sentences a README quotes (`sentences`) are all made from those same strings, so no verdict is
ever written by hand. The unrounded frame is written beside them (`<axis>_paired.csv`) so a
test can recompute it from the runs tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from olives.errors import InputError
from olives.evaluation.paired import paired_comparisons
from olives.reporting.protocol import Protocol, header_lines, post_hoc_lines
from olives.reporting.tables import MISSING, latex_table, markdown_table

NOT_RUN = "not run"
COLUMNS = (
    "metric",
    "role",
    "method",
    "reference",
    "mean",
    "low",
    "high",
    "pairs",
    "units",
    "p",
    "p_holm",
    "verdict",
)
SPLIT, SEED = "split", "seed"  # the replication grid's columns
_NAME = "__method__"  # the joined method name, beside the runs' own columns


class RunsError(InputError, ValueError):
    """A runs table cannot be compared by its protocol (a missing column, a duplicate run)."""


def method_names(runs: pd.DataFrame, protocol: Protocol) -> pd.Series:
    """Each run's method: the protocol's method columns' values joined by '/'."""
    _require(runs, protocol.method, "a method column")
    values = runs[list(protocol.method)].astype(str)
    joined = ["/".join(row) for row in values.itertuples(index=False)]
    return pd.Series(joined, index=runs.index, dtype=object, name="method")


def compare(runs: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Every comparison of the protocol on the primary metric, then on each secondary one
    (rows in protocol order, Holm within each metric). A comparison whose method or reference
    has no run is a row with 0 pairs and the verdict 'not run'."""
    _require(runs, protocol.pair_on, "a pairing column")
    _require(runs, protocol.metrics, "a metric column")
    table = runs[[*protocol.pair_on, *protocol.metrics]].copy()
    table[_NAME] = method_names(runs, protocol)
    _refuse_duplicates(table, protocol.pair_on)
    pairs = [(c.method, c.reference) for c in protocol.comparisons]
    rows = []
    for metric in protocol.metrics:
        role = "primary" if metric == protocol.primary else "secondary"
        found = paired_comparisons(
            table, pairs, metric, protocol.pair_on, _NAME, protocol.ci, protocol.unit
        )
        done = {(c.method, c.reference): c for c in found}
        for method, reference in pairs:
            c = done.get((method, reference))
            if c is None:
                nan = math.nan
                empty = (nan, nan, nan, 0, 0, nan, nan)
                rows.append((metric, role, method, reference, *empty, NOT_RUN))
            else:
                numbers = (c.mean, c.low, c.high, c.pairs, c.units, c.p, c.p_holm)
                rows.append((metric, role, method, reference, *numbers, c.verdict))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"pairs": int, "units": int})


def _require(runs: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    for column in columns:
        if column not in runs.columns:
            have = ", ".join(map(str, runs.columns))
            raise RunsError(f"runs table has no column '{column}' ({what}); it has: {have}")


def _refuse_duplicates(table: pd.DataFrame, pair_on: Sequence[str]) -> None:
    """Two runs of one method in one pair would be averaged silently: refuse them."""
    keys = [_NAME, *pair_on]
    twice = table[table.duplicated(keys, keep=False)]
    if len(twice):
        first = twice.iloc[0]
        where = ", ".join(f"{k}={first[k]}" for k in pair_on)
        raise RunsError(f"runs table has {first[_NAME]!r} twice at {where}")


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparisons as the strings every output shows: difference `+0.012`, interval
    `[-0.010, +0.034]`, pairs, Holm p `0.172` and the verdict."""
    return pd.DataFrame(
        {
            "metric": frame["metric"].astype(str),
            "method": frame["method"].astype(str),
            "reference": frame["reference"].astype(str),
            "difference": [_signed(v) for v in frame["mean"]],
            "interval": [_interval(*b) for b in zip(frame["low"], frame["high"], strict=True)],
            "pairs": frame["pairs"].astype(int).astype(str),
            "splits": frame["units"].astype(int).astype(str),
            "p (Holm)": [_p_value(v) for v in frame["p_holm"]],
            "verdict": frame["verdict"].astype(str),
        }
    ).reset_index(drop=True)


def _signed(value: float) -> str:
    return MISSING if _missing(value) else f"{value:+.3f}"


def _interval(low: float, high: float) -> str:
    if _missing(low) or _missing(high):
        return MISSING
    return f"[{low:+.3f}, {high:+.3f}]"


def _p_value(value: float) -> str:
    if _missing(value):
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _missing(value: float) -> bool:
    return value is None or value != value


def sentences(frame: pd.DataFrame, primary_only: bool = True) -> list[str]:
    """One generated sentence per comparison (the primary metric's only, by default), e.g.
    `student vs single: +0.012 macro_auroc [-0.010, +0.034], 6 pairs, Holm p 0.172: no clear
    difference.`: the words a README may quote verbatim."""
    text = formatted(frame)
    keep = frame["role"].eq("primary").to_numpy() if primary_only else [True] * len(frame)
    rows = text.to_dict("records")
    return [_sentence(row) for row, kept in zip(rows, keep, strict=True) if kept]


def _sentence(row: dict[str, str]) -> str:
    head = f"{row['method']} vs {row['reference']}"
    if row["verdict"] == NOT_RUN:
        return f"{head}: {row['metric']} {NOT_RUN}."
    n = row["pairs"]
    pairs = f"{n} pair" if n == "1" else f"{n} pairs"
    if row["splits"] != n:
        pairs += f" in {row['splits']} splits"
    if row["interval"] == MISSING:
        return f"{head}: {row['difference']} {row['metric']}, {pairs}, too few for an interval."
    return (
        f"{head}: {row['difference']} {row['metric']} {row['interval']}, {pairs}, "
        f"Holm p {row['p (Holm)']}: {row['verdict']}."
    )


def write_comparisons(out_dir: Path, axis: str, frame: pd.DataFrame) -> list[str]:
    """`<axis>_paired.csv` (unrounded) and `<axis>_paired.tex` under `out_dir`; returns the
    Markdown lines: the table, then the primary metric's verdicts as sentences."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / f"{axis}_paired.csv", index=False)
    text = formatted(frame)
    caption = (
        f"{axis.capitalize()} axis: paired differences (method - reference), unadjusted "
        "t-intervals, Holm-adjusted p-values."
    )
    tex = latex_table(text, caption, f"tab:{axis}-paired", align="lll" + "r" * 5 + "l")
    (out_dir / f"{axis}_paired.tex").write_text(tex)
    verdicts = sentences(frame)
    return [
        markdown_table(text),
        "Verdicts (primary metric):",
        "",
        *(f"- {s}" for s in verdicts),
        "",
    ]


def comparison_section(
    out_dir: Path,
    runs: pd.DataFrame,
    protocol: Protocol,
    splits: Sequence[int],
    seeds: Sequence[int],
) -> list[str]:
    """The whole section for a table's Markdown: the protocol, the comparisons (written to
    `<axis>_paired.csv/.tex` too) and the post-hoc list."""
    frame = compare(runs, protocol)
    return [
        "### Paired comparisons",
        "",
        *header_lines(protocol, splits, seeds),
        *write_comparisons(out_dir, protocol.axis, frame),
        *post_hoc_lines(protocol),
    ]


def check_runs(
    runs: pd.DataFrame, protocol: Protocol, splits: Sequence[int], seeds: Sequence[int]
) -> list[tuple[str, int, int]]:
    """(method, split, seed) of every cell of the grid where a method named in the
    comparisons has no run with a primary metric: empty when the grid is complete."""
    _require(runs, (SPLIT, SEED, protocol.primary), "the replication grid")
    names = method_names(runs, protocol)
    done = runs[protocol.primary].notna()
    have = set(zip(names[done], runs.loc[done, SPLIT], runs.loc[done, SEED], strict=True))
    methods = dict.fromkeys(n for c in protocol.comparisons for n in (c.method, c.reference))
    return [
        (method, split, seed)
        for method in methods
        for split in splits
        for seed in seeds
        if (method, split, seed) not in have
    ]


def require_replication(runs: pd.DataFrame, min_splits: int = 3, min_seeds: int = 2) -> None:
    """Refuse a runs table with fewer than `min_splits` patient splits, or a split with fewer
    than `min_seeds` training seeds: its differences would be training noise on one test set."""
    _require(runs, (SPLIT, SEED), "the replication grid")
    splits = sorted(runs[SPLIT].dropna().unique())
    if len(splits) < min_splits:
        raise RunsError(
            f"runs table has {len(splits)} patient split(s) ({_listed(splits)}); the paired "
            f"rule needs at least {min_splits}"
        )
    per_split = runs.groupby(SPLIT)[SEED].nunique()
    short = per_split[per_split < min_seeds]
    if len(short):
        split, count = short.index[0], int(short.iloc[0])
        raise RunsError(
            f"runs table has {count} training seed(s) on patient split {split}; the paired "
            f"rule needs at least {min_seeds} per split"
        )


def _listed(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values) or "none"
