"""Patient-level splits: no leakage, official test kept, folds partition, prevalence balanced."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olives.config import ConfigError, SplitConfig
from olives.data.splits import (
    SplitError,
    SplitLeakError,
    assign_splits,
    check_no_leak,
    split_summary,
)

REAL_LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_rows(
    sizes: list[int],
    n_labels: int,
    seed: int,
    official: set[int] = frozenset(),
    patient_ids: list[int] | None = None,
) -> pd.DataFrame:
    """Rows of patients with their own per-label prevalence (labels cluster by patient)."""
    rng = np.random.default_rng(seed)
    ids = patient_ids or list(range(len(sizes)))
    patient = np.repeat(ids, sizes)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    prevalence = rng.beta(0.6, 0.9, size=(len(sizes), n_labels))
    y = (rng.random((len(patient), n_labels)) < prevalence[owner]).astype(float)
    rows = pd.DataFrame(y, columns=[f"L{i}" for i in range(n_labels)])
    rows["Patient_ID"] = patient
    rows["source_split"] = np.where(np.isin(patient, list(official)), "test", "train")
    rows.index = pd.RangeIndex(1000, 1000 + len(rows))  # not 0-based: alignment must hold
    return rows


def labels_of(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c.startswith("L")]


def max_deviation(rows: pd.DataFrame, splits: pd.Series, labels: list[str]) -> dict[str, float]:
    whole = rows[labels].mean()
    return {
        name: float((rows.loc[splits == name, labels].mean() - whole).abs().max())
        for name in ("train", "val", "test")
    }


@st.composite
def split_cases(draw: st.DrawFn, kfold: bool = False) -> tuple[pd.DataFrame, SplitConfig, int]:
    """Feasible frames: >= 12 patients, >= 7 left after any test split, <= 360 rows."""
    n = draw(st.integers(12, 30))
    sizes = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    ids = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    n_official = draw(st.integers(0, n - 7))
    official = set(ids[:n_official])
    rows = make_rows(sizes, draw(st.integers(1, 4)), draw(st.integers(0, 2**32 - 1)), official, ids)
    n_folds = draw(st.integers(2, 4)) if kfold else 1
    cfg = SplitConfig(
        val_fraction=draw(st.floats(0.1, 0.4)),
        test_fraction=draw(st.floats(0.1, 0.4)),
        n_folds=n_folds,
        candidates=draw(st.integers(1, 4)),
    )
    return rows, cfg, draw(st.integers(-(2**40), 2**40))


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(split_cases())
def test_every_row_assigned_without_leak(case: tuple[pd.DataFrame, SplitConfig, int]) -> None:
    rows, cfg, seed = case
    splits = assign_splits(rows, labels_of(rows), cfg, seed)
    assert splits.index.equals(rows.index)
    assert set(splits.unique()) == {"train", "val", "test"}
    check_no_leak(splits, rows["Patient_ID"])
    official = (rows["source_split"] == "test").to_numpy()
    if official.any():
        np.testing.assert_array_equal((splits == "test").to_numpy(), official)
    # Deterministic, and independent of row order.
    shuffled = rows.sample(frac=1.0, random_state=0)
    again = assign_splits(shuffled, labels_of(rows), cfg, seed)
    pd.testing.assert_series_equal(again.reindex(rows.index), splits)


@HYPOTHESIS
@given(split_cases(kfold=True))
def test_kfold_val_folds_partition_non_test_patients(
    case: tuple[pd.DataFrame, SplitConfig, int],
) -> None:
    rows, cfg, seed = case
    per_fold = [
        assign_splits(rows, labels_of(rows), SplitConfig(**{**vars(cfg), "fold": f}), seed)
        for f in range(cfg.n_folds)
    ]
    test = per_fold[0] == "test"
    val_count = pd.Series(0, index=rows.index)
    for splits in per_fold:
        check_no_leak(splits, rows["Patient_ID"])
        pd.testing.assert_series_equal(splits == "test", test)
        assert (splits == "val").any()
        val_count += splits == "val"
    assert (val_count[~test] == 1).all()
    assert (val_count[test] == 0).all()


@HYPOTHESIS
@given(st.integers(24, 40), st.integers(0, 2**32 - 1))
def test_linked_patients_land_together(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = make_rows(rng.integers(1, 8, n).tolist(), 3, seed)
    group_of_patient = rng.permutation(n) // 2  # pairs of patients share a group
    rows["group"] = group_of_patient[rows["Patient_ID"].to_numpy()]
    splits = assign_splits(rows, labels_of(rows), SplitConfig(), seed, group_column="group")
    assert (splits.groupby(rows["group"]).nunique() == 1).all()
    check_no_leak(splits, rows["Patient_ID"])


# ---------------------------------------------------------------------------------------------
# Prevalence balance
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eighty_patients() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return make_rows(rng.integers(20, 61, 80).tolist(), 5, seed=7)


@pytest.mark.parametrize("official", [False, True])
def test_prevalence_balanced_on_eighty_patients(
    eighty_patients: pd.DataFrame, official: bool
) -> None:
    rows = eighty_patients.copy()
    if official:
        rows["source_split"] = np.where(rows["Patient_ID"] < 16, "test", "train")
    labels = labels_of(rows)
    splits = assign_splits(rows, labels, SplitConfig(), seed=3)
    pool = rows[splits != "test"] if official else rows
    whole = pool[labels].mean()
    for name in ("train", "val") if official else ("train", "val", "test"):
        assert (rows.loc[splits == name, labels].mean() - whole).abs().max() <= 0.05, name
    val_rows = (splits == "val").sum() / len(pool)
    assert abs(val_rows - 0.2) <= 0.05


def test_label_without_positives_does_not_crash(eighty_patients: pd.DataFrame) -> None:
    rows = eighty_patients.assign(L0=0.0)
    splits = assign_splits(rows, labels_of(rows), SplitConfig(n_folds=3), seed=0)
    summary = split_summary(rows, splits, labels_of(rows))
    assert all(s["prevalence"]["L0"] == 0.0 for s in summary["splits"].values())


def test_seed_changes_split_and_repeats_exactly(eighty_patients: pd.DataFrame) -> None:
    labels = labels_of(eighty_patients)
    draws = [assign_splits(eighty_patients, labels, SplitConfig(), s) for s in (0, 1, 2)]
    assert len({tuple(d) for d in draws}) > 1
    pd.testing.assert_series_equal(
        draws[0], assign_splits(eighty_patients, labels, SplitConfig(), 0)
    )


def real_rows(shared_dir: Path) -> pd.DataFrame:
    folder = shared_dir / "olives-reference" / "labels"
    labels = pd.read_csv(folder / "Training_Biomarker_Data.csv")
    clinical = pd.read_csv(folder / "Biomarker_Clinical_Data_Images.csv")
    assert (labels.iloc[:, 0] == clinical.iloc[:, 0]).all(), "label files are not row-aligned"
    rows = labels[list(REAL_LABELS)].astype(float)
    rows["Patient_ID"] = clinical["Patient_ID"]
    rows["source_split"] = "train"
    assert rows.shape[0] == 9408 and rows["Patient_ID"].nunique() == 87
    return rows


def test_real_labels_balanced_single_and_five_fold(shared_dir: Path) -> None:
    rows = real_rows(shared_dir)
    labels = list(REAL_LABELS)
    single = assign_splits(rows, labels, SplitConfig(), seed=42)
    folds = [assign_splits(rows, labels, SplitConfig(n_folds=5, fold=f), 42) for f in range(5)]
    for name, splits in [("single", single)] + [(f"fold{f}", s) for f, s in enumerate(folds)]:
        check_no_leak(splits, rows["Patient_ID"])
        patients = [set(rows.loc[splits == s, "Patient_ID"]) for s in ("train", "val", "test")]
        assert not (
            patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2]
        )
        deviation = max_deviation(rows, splits, labels)
        print(
            f"{name}: max |prevalence - whole| "
            + ", ".join(f"{k}={v:.4f}" for k, v in deviation.items())
        )
        assert max(deviation.values()) <= 0.05, name
    val_sets = [set(rows.loc[s == "val", "Patient_ID"]) for s in folds]
    assert sum(len(v) for v in val_sets) == len(set().union(*val_sets))


# ---------------------------------------------------------------------------------------------
# Groups, official test, bad input
# ---------------------------------------------------------------------------------------------


def test_patient_spanning_two_groups_merges_them(eighty_patients: pd.DataFrame) -> None:
    rows = eighty_patients.copy()
    rows["group"] = rows["Patient_ID"]
    patient_3 = rows.index[rows["Patient_ID"] == 3]
    rows.loc[patient_3[: len(patient_3) // 2], "group"] = 50  # patient 3 also in patient 50's group
    for seed in range(4):
        splits = assign_splits(rows, labels_of(rows), SplitConfig(), seed, group_column="group")
        assert splits[rows["Patient_ID"].isin([3, 50])].nunique() == 1


def test_official_test_pulls_its_whole_group(
    eighty_patients: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    rows = eighty_patients.copy()
    first = rows.index[rows["Patient_ID"] == 0]
    rows.loc[first[:3], "source_split"] = "test"
    with caplog.at_level(logging.WARNING):
        splits = assign_splits(rows, labels_of(rows), SplitConfig(), seed=0)
    assert set(splits[splits == "test"].index) == set(first)
    assert f"{len(first) - 3} source-train rows" in caplog.text


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"val_fraction": 0.0}, "split.val_fraction"),
        ({"val_fraction": 1.0}, "split.val_fraction"),
        ({"test_fraction": -0.1}, "split.test_fraction"),
        ({"n_folds": 0}, "split.n_folds"),
        ({"n_folds": 5, "fold": 5}, "split.fold"),
        ({"fold": -1}, "split.fold"),
        ({"candidates": 0}, "split.candidates"),
    ],
)
def test_bad_config_names_the_parameter(
    eighty_patients: pd.DataFrame, change: dict, name: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        assign_splits(eighty_patients, labels_of(eighty_patients), SplitConfig(**change), 0)


def test_too_few_patients_is_a_clear_error() -> None:
    rows = make_rows([5, 5, 5], 2, seed=0)
    with pytest.raises(SplitError, match=r"split\.val_fraction"):
        assign_splits(rows, labels_of(rows), SplitConfig(test_fraction=0.3, val_fraction=0.6), 0)
    with pytest.raises(SplitError, match=r"split\.test_fraction"):
        assign_splits(rows.iloc[:5], labels_of(rows), SplitConfig(), 0)
    with pytest.raises(SplitError, match=r"split\.n_folds"):
        assign_splits(rows, labels_of(rows), SplitConfig(n_folds=3), 0)


def test_bad_rows_name_the_column_or_row() -> None:
    rows = make_rows([4] * 12, 2, seed=0)
    with pytest.raises(SplitError, match="L7"):
        assign_splits(rows, ["L0", "L7"], SplitConfig(), 0)
    with pytest.raises(SplitError, match="source_split"):
        assign_splits(rows.drop(columns="source_split"), ["L0"], SplitConfig(), 0)
    with pytest.raises(SplitError, match="validation"):
        assign_splits(rows.assign(source_split="validation"), ["L0"], SplitConfig(), 0)
    broken = rows.copy()
    broken.loc[1005, "L1"] = np.nan
    with pytest.raises(SplitError, match="'L1' at row 1005"):
        assign_splits(broken, ["L0", "L1"], SplitConfig(), 0)


# ---------------------------------------------------------------------------------------------
# Leak check and summary
# ---------------------------------------------------------------------------------------------


def test_check_no_leak_names_the_patient() -> None:
    patients = pd.Series([7, 7, 8, 9, 9])
    splits = pd.Series(["train", "val", "test", "val", "val"])
    with pytest.raises(SplitLeakError, match=r"7 \(train/val\)") as info:
        check_no_leak(splits, patients)
    assert isinstance(info.value, ValueError)
    assert info.value.patients == (7,)
    check_no_leak(pd.Series(["train", "train", "test", "val", "val"]), patients)


def test_split_summary_matches_pandas(eighty_patients: pd.DataFrame) -> None:
    rows = eighty_patients
    labels = labels_of(rows)
    splits = assign_splits(rows, labels, SplitConfig(), seed=1)
    summary = json.loads(json.dumps(split_summary(rows, splits, labels)))
    assert list(summary["splits"]) == ["train", "val", "test"]
    for name, part in summary["splits"].items():
        subset = rows[splits == name]
        assert part["patients"] == sorted(subset["Patient_ID"].unique().tolist())
        assert part["n_patients"] == len(part["patients"])
        assert part["n_rows"] == len(subset)
        for label in labels:
            assert part["prevalence"][label] == round(subset[label].mean(), 4)
    assert sum(p["n_rows"] for p in summary["splits"].values()) == summary["overall"]["n_rows"]
    assert summary["overall"]["prevalence"] == {k: round(rows[k].mean(), 4) for k in labels}
