"""A table's paired comparisons by its protocol (`olives.reporting.comparisons`), against a
hand computation: the paired t-interval from `scipy.stats.t.ppf`, Holm on three p-values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from olives.evaluation.paired import HELPED, HURT, NO_CLEAR
from olives.reporting.comparisons import (
    NOT_RUN,
    RunsError,
    check_runs,
    compare,
    comparison_section,
    formatted,
    method_names,
    require_replication,
    sentences,
    write_comparisons,
)
from olives.reporting.protocol import Comparison, PostHoc, Protocol

GRID = [(split, seed) for split in (0, 1, 2) for seed in (0, 1)]  # 6 pairs
BASE = [0.70, 0.72, 0.68, 0.71, 0.69, 0.73]  # image/focal, per (split, seed)
GAPS = {  # method - image/focal per pair
    "concat/focal": [0.05, 0.06, 0.04, 0.05, 0.07, 0.05],  # helped
    "clinical/focal": [-0.10, -0.12, -0.09, -0.11, -0.10, -0.13],  # hurt
    "image/bce": [0.02, -0.03, 0.01, -0.02, 0.03, 0.005],  # holds 0
}


def protocol() -> Protocol:
    pairs = [
        ("concat/focal", "image/focal"),
        ("clinical/focal", "image/focal"),
        ("image/bce", "image/focal"),
        ("concat/bce", "image/focal"),  # never run
    ]
    return Protocol(
        axis="ablation",
        question="Which fusion and loss?",
        method=("fusion", "loss"),
        comparisons=tuple(Comparison(m, r, "why not") for m, r in pairs),
        primary="macro_auroc",
        secondary=("macro_f1",),
        budget="tiny",
        written="2026-12-06",
        post_hoc=(PostHoc("a change", "a reason", "a result"),),
    )


def runs_frame() -> pd.DataFrame:
    rows = []
    for name, gaps in {"image/focal": [0.0] * 6, **GAPS}.items():
        fusion, loss = name.split("/")
        for (split, seed), base, gap in zip(GRID, BASE, gaps, strict=True):
            f1 = 0.4 + base / 10 - gap  # the secondary metric moves the other way
            coordinates = {"fusion": fusion, "loss": loss, "split": split, "seed": seed}
            rows.append({**coordinates, "macro_auroc": base + gap, "macro_f1": f1})
    return pd.DataFrame(rows)


def by_hand(diffs: list[float]) -> tuple[float, float, float, float]:
    """The t-interval over the 3 splits of each split's mean over its 2 seeds (GRID order)."""
    d = np.asarray(diffs).reshape(3, 2).mean(axis=1)
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)
    return mean, mean - half, mean + half, p


def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(3), key=lambda i: p[i])
    adjusted, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):  # x3, x2, x1, never below the one before
        running = max(running, min(1.0, (3 - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_method_names_join_the_protocols_columns():
    names = method_names(runs_frame(), protocol())
    assert names.iloc[0] == "image/focal" and set(names) == {"image/focal", *GAPS}


def test_compare_is_the_hand_computation():
    frame = compare(runs_frame(), protocol())
    primary = frame[frame["role"] == "primary"].reset_index(drop=True)
    raw = [by_hand(GAPS[m]) for m in GAPS]
    adjusted = holm_by_hand([p for *_, p in raw])
    for i, ((mean, low, high, p), p_holm) in enumerate(zip(raw, adjusted, strict=True)):
        row = primary.iloc[i]
        assert (row["mean"], row["low"], row["high"]) == pytest.approx((mean, low, high))
        assert (row["p"], row["p_holm"]) == pytest.approx((p, p_holm))
        assert (row["pairs"], row["units"]) == (6, 3)
    assert list(primary["verdict"]) == [HELPED, HURT, NO_CLEAR, NOT_RUN]
    assert primary["low"][2] < 0 < primary["high"][2]  # the interval holds 0: no verdict
    assert list(frame["metric"]) == ["macro_auroc"] * 4 + ["macro_f1"] * 4
    assert list(frame["verdict"][4:]) == [HURT, HELPED, NO_CLEAR, NOT_RUN]


def test_a_comparison_never_run_is_a_row_not_a_gap():
    frame = compare(runs_frame(), protocol())
    missing = frame[frame["method"] == "concat/bce"]
    assert len(missing) == 2 and (missing["pairs"] == 0).all()
    assert (missing["verdict"] == NOT_RUN).all() and missing["mean"].isna().all()
    assert "concat/bce vs image/focal: macro_auroc not run." in sentences(frame)


def test_one_string_for_markdown_latex_and_sentences(tmp_path: Path):
    frame = compare(runs_frame(), protocol())
    markdown = "\n".join(write_comparisons(tmp_path, "ablation", frame))
    latex = (tmp_path / "ablation_paired.tex").read_text()
    said = sentences(frame)
    assert len(said) == 4 and all(f"- {s}" in markdown for s in said)
    for row, sentence in zip(formatted(frame).itertuples(index=False), said, strict=False):
        cells = [str(v) for v in row]
        assert "| " + " | ".join(cells) + " |" in markdown
        assert " & ".join(c.replace("_", r"\_") for c in cells) + r" \\" in latex
        if row.verdict != NOT_RUN:
            assert sentence == (
                f"{row.method} vs {row.reference}: {row.difference} {row.metric} "
                f"{row.interval}, {row.pairs} pairs in {row.splits} splits, Holm p "
                f"{row[7]}: {row.verdict}."
            )
    first = formatted(frame).iloc[0]
    assert first["difference"] == "+0.053" and first["interval"].startswith("[+0.0")


def test_the_csv_round_trips_to_a_recomputation_from_runs_csvs(tmp_path: Path):
    runs_csv = tmp_path / "ablation_runs.csv"
    runs_frame().to_csv(runs_csv, index=False)
    write_comparisons(tmp_path, "ablation", compare(pd.read_csv(runs_csv), protocol()))
    written = pd.read_csv(tmp_path / "ablation_paired.csv")
    again = compare(pd.read_csv(runs_csv), protocol())
    assert list(written.columns) == list(again.columns)
    for column in ("metric", "role", "method", "reference", "verdict", "pairs"):
        assert list(written[column]) == list(again[column])
    for column in ("mean", "low", "high", "p", "p_holm"):
        np.testing.assert_allclose(written[column], again[column], rtol=0, atol=1e-12)


def test_the_section_prints_protocol_table_and_post_hoc(tmp_path: Path):
    lines = comparison_section(tmp_path, runs_frame(), protocol(), [0, 1, 2], [0, 1])
    text = "\n".join(lines)
    assert text.index("**Protocol**") < text.index("| metric |") < text.index("**Post hoc**")
    assert "a change; why: a reason; seen: a result." in text


def test_runs_without_a_pairing_column_or_with_a_run_twice_are_refused():
    with pytest.raises(RunsError, match=r"^runs table has no column 'split' \(a pairing column\)"):
        compare(runs_frame().drop(columns="split"), protocol())
    with pytest.raises(RunsError, match="no column 'macro_f1'"):
        compare(runs_frame().drop(columns="macro_f1"), protocol())
    twice = pd.concat([runs_frame(), runs_frame().iloc[[3]]])
    with pytest.raises(RunsError, match="'image/focal' twice at split=1, seed=1"):
        compare(twice, protocol())


def test_check_runs_lists_the_grids_missing_cells():
    runs = runs_frame()
    runs = runs[~((runs["fusion"] == "image") & (runs["loss"] == "bce") & (runs["split"] == 2))]
    missing = check_runs(runs, protocol(), splits=[0, 1, 2], seeds=[0, 1])
    expected_bce = [("image/bce", 2, 0), ("image/bce", 2, 1)]
    expected_never = [("concat/bce", s, e) for s, e in GRID]
    assert sorted(missing) == sorted(expected_bce + expected_never)


def test_require_replication_names_what_is_short():
    require_replication(runs_frame())
    one_split = runs_frame()[runs_frame()["split"] == 0]
    with pytest.raises(RunsError, match=r"1 patient split\(s\) \(0\); .* at least 3"):
        require_replication(one_split)
    one_seed = runs_frame()[~((runs_frame()["split"] == 1) & (runs_frame()["seed"] == 1))]
    with pytest.raises(RunsError, match=r"1 training seed.* on patient split 1"):
        require_replication(one_seed)
