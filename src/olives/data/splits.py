"""Patient-level train/val/test splits of the labelled rows, stratified on multi-label prevalence.

Rows are images but leakage happens through patients, so every split is drawn over *groups*: a
patient, or patients linked by a shared byte-identical image (all rows of a group land in one
split). Labels are per image and groups differ in size, so each group is described to the
iterative stratifier by indicators of its per-label prevalence; one stratified draw over ~90
groups is still noisy, so `candidates` draws are scored on image-weighted prevalence and row
fractions and the best one is kept. Everything is deterministic given the seed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from olives.config import ConfigError, SplitConfig
from olives.data.ids import plain
from olives.errors import InputError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCE_SPLIT_COLUMN = "source_split"
# A group counts as "positive" for a label at several prevalence levels, so the stratifier
# balances image-level prevalence rather than just "has at least one positive image".
PREVALENCE_THRESHOLDS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
# Weight of the row-fraction error against the max prevalence deviation in a candidate's score.
FRACTION_WEIGHT = 0.5
_PARAM = "split"


class SplitError(InputError, ValueError):
    """The rows cannot be split as asked (bad columns, too few patients or groups)."""


class SplitLeakError(SplitError):
    """A patient has rows in more than one split."""

    def __init__(self, message: str, patients: Sequence[object]) -> None:
        super().__init__(message)
        self.patients = tuple(patients)


@dataclass(frozen=True)
class _Groups:
    """Per-group row counts and positive-row counts: all a split's prevalence depends on."""

    sizes: np.ndarray  # (n_groups,) rows per group
    positives: np.ndarray  # (n_groups, n_labels) positive rows per group

    def subset(self, mask: np.ndarray) -> _Groups:
        return _Groups(self.sizes[mask], self.positives[mask])

    def prevalence(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Image-weighted prevalence per label over the groups in `mask` (all when None)."""
        sizes = self.sizes if mask is None else self.sizes[mask]
        positives = self.positives if mask is None else self.positives[mask]
        return positives.sum(axis=0) / max(int(sizes.sum()), 1)

    def features(self) -> np.ndarray:
        """Binary group descriptors for the stratifier: prevalence levels, size, a constant.

        The constant column keeps the target multilabel even with one label or no positives.
        """
        per_group = self.positives / self.sizes[:, None]
        columns = [per_group > t for t in PREVALENCE_THRESHOLDS]
        columns.append((self.sizes > np.median(self.sizes))[:, None])
        columns.append(np.ones((len(self.sizes), 1), dtype=bool))
        return np.hstack(columns)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def assign_splits(
    rows: pd.DataFrame,
    labels: Sequence[str],
    cfg: SplitConfig,
    seed: int,
    patient_column: str = "Patient_ID",
    group_column: str | None = None,
) -> pd.Series:
    """Assign every row to 'train', 'val' or 'test', keeping each group in one split.

    Official test rows (`source_split == 'test'`) stay test; otherwise `test_fraction` of the
    groups is held out first. `val_fraction` is a fraction of what remains after the test split
    (with `n_folds > 1`, val is fold `fold` of a k-fold over what remains).
    """
    _check_config(cfg)
    y = _label_matrix(rows, labels)
    codes = _group_codes(rows, patient_column, group_column)
    groups = _group_table(y, codes)
    official = _official_test_groups(rows, codes, len(groups.sizes))
    reference = groups.prevalence(~official)
    test_seeds, val_seeds = (
        s.generate_state(cfg.candidates) for s in np.random.SeedSequence(_entropy(seed)).spawn(2)
    )
    if official.any():
        test = official
    else:
        test = _hold_out(groups, reference, cfg.test_fraction, test_seeds, "test_fraction")
    pool = np.flatnonzero(~test)
    val = np.zeros_like(test)
    if cfg.n_folds > 1:
        folds = _best_kfold(groups.subset(pool), reference, cfg.n_folds, val_seeds)
        val[pool] = folds == cfg.fold
    else:
        val[pool] = _hold_out(
            groups.subset(pool), reference, cfg.val_fraction, val_seeds, "val_fraction"
        )
    names = np.where(test, "test", np.where(val, "val", "train"))
    return pd.Series(names[codes], index=rows.index, name="split", dtype=object)


def assign_folds(
    rows: pd.DataFrame,
    labels: Sequence[str],
    k: int,
    seed: int,
    candidates: int,
    patient_column: str = "Patient_ID",
    group_column: str | None = None,
) -> np.ndarray:
    """Fold number 0..k-1 per row: a stratified k-fold over the rows' patient groups (the
    paper's teachers cut a split's training patients this way), the best of `candidates`
    draws, deterministic given the seed."""
    y = _label_matrix(rows, labels)
    codes = _group_codes(rows, patient_column, group_column)
    groups = _group_table(y, codes)
    seeds = np.random.SeedSequence(_entropy(seed)).generate_state(candidates)
    return _best_kfold(groups, groups.prevalence(), k, seeds)[codes]


def check_no_leak(splits: pd.Series, patients: pd.Series) -> None:
    """Raise `SplitLeakError` naming every patient whose rows fall in more than one split."""
    if not splits.index.equals(patients.index):
        raise SplitError("check_no_leak: splits and patients are not aligned on the same index")
    per_patient = pd.DataFrame({"split": splits.to_numpy(), "patient": patients.to_numpy()})
    seen = per_patient.groupby("patient", sort=True)["split"].unique()
    leaked = seen[seen.map(len) > 1]
    if leaked.empty:
        return
    shown = ", ".join(f"{p} ({'/'.join(sorted(map(str, s)))})" for p, s in leaked.head(20).items())
    more = f" and {len(leaked) - 20} more" if len(leaked) > 20 else ""
    raise SplitLeakError(
        f"{len(leaked)} patient(s) appear in more than one split: {shown}{more}",
        list(leaked.index),
    )


def split_summary(
    rows: pd.DataFrame,
    splits: pd.Series,
    labels: Sequence[str],
    patient_column: str = "Patient_ID",
) -> dict:
    """The `data/splits.json` record: per split its patients, sizes and label prevalence."""
    if not splits.index.equals(rows.index):
        raise SplitError("split_summary: splits and rows are not aligned on the same index")
    y = _label_matrix(rows, labels)
    overall = y.mean(axis=0)
    present = [s for s in SPLITS if (splits == s).any()]
    present += sorted(set(map(str, splits.unique())) - set(SPLITS))
    out: dict = {"splits": {}}
    for name in present:
        mask = (splits == name).to_numpy()
        prevalence = y[mask].mean(axis=0)
        patients = rows.loc[mask, patient_column]
        out["splits"][name] = {
            "patients": sorted(plain(p) for p in patients.unique()),
            "n_patients": int(patients.nunique()),
            "n_rows": int(mask.sum()),
            "prevalence": _rounded(labels, prevalence),
            "max_abs_deviation": round(float(np.abs(prevalence - overall).max()), 4),
        }
    out["overall"] = {
        "n_patients": int(rows[patient_column].nunique()),
        "n_rows": len(rows),
        "prevalence": _rounded(labels, overall),
    }
    return out


# ---------------------------------------------------------------------------------------------
# Input checks and group construction
# ---------------------------------------------------------------------------------------------


def _check_config(cfg: SplitConfig) -> None:
    """Reject fractions outside (0, 1), n_folds < 1, a fold out of range, candidates < 1."""
    for name in ("val_fraction", "test_fraction"):
        value = getattr(cfg, name)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"'{_PARAM}.{name}' = {value!r} must be in (0, 1)")
    if cfg.n_folds < 1:
        raise ConfigError(f"'{_PARAM}.n_folds' = {cfg.n_folds!r} must be >= 1")
    if not 0 <= cfg.fold < cfg.n_folds:
        raise ConfigError(
            f"'{_PARAM}.fold' = {cfg.fold!r} must be in [0, {cfg.n_folds}) "
            f"for '{_PARAM}.n_folds' = {cfg.n_folds}"
        )
    if cfg.candidates < 1:
        raise ConfigError(f"'{_PARAM}.candidates' = {cfg.candidates!r} must be >= 1")


def _label_matrix(rows: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The (rows, labels) 0/1 matrix; a missing column or a non-0/1 value names the culprit."""
    if len(labels) == 0:
        raise SplitError("labels: at least one label column is needed to stratify")
    if rows.empty:
        raise SplitError("rows: no labelled rows to split")
    missing = [c for c in labels if c not in rows.columns]
    if missing:
        raise SplitError(f"rows lack label column(s) {missing}")
    y = rows[list(labels)].to_numpy(dtype=float)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SplitError(
            f"label '{labels[c]}' at row {rows.index[r]!r} is {y[r, c]!r}; expected 0 or 1"
        )
    return y


def _group_codes(rows: pd.DataFrame, patient_column: str, group_column: str | None) -> np.ndarray:
    """Group index (0..n-1) per row: connected components of patients and linked groups.

    Components (not the raw group ids) make a patient whose rows carry two group ids pull both
    groups together. Codes follow each component's smallest patient, so row order is irrelevant.
    """
    columns = [patient_column] + ([group_column] if group_column else [])
    for column in columns:
        if column not in rows.columns:
            raise SplitError(f"rows lack column '{column}'")
        if rows[column].isna().any():
            first = rows.index[rows[column].isna().to_numpy()][0]
            raise SplitError(f"column '{column}' is missing at row {first!r}")
    patient_codes, patients = pd.factorize(rows[patient_column], sort=True)
    if group_column is None:
        return patient_codes
    group_codes, _ = pd.factorize(rows[group_column], sort=True)
    roots = _union_roots(len(patients), patient_codes, group_codes)
    return pd.factorize(roots[patient_codes], sort=True)[0]


def _union_roots(n_patients: int, patient_codes: np.ndarray, group_codes: np.ndarray) -> np.ndarray:
    """Union-find over patient nodes [0, n) and group nodes [n, ...); root = smallest node."""
    parent = list(range(n_patients + int(group_codes.max()) + 1))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for p, g in sorted(
        set(zip(patient_codes.tolist(), (group_codes + n_patients).tolist(), strict=True))
    ):
        a, b = find(p), find(g)
        parent[max(a, b)] = min(a, b)
    return np.array([find(p) for p in range(n_patients)])


def _group_table(y: np.ndarray, codes: np.ndarray) -> _Groups:
    n = int(codes.max()) + 1
    positives = np.zeros((n, y.shape[1]))
    np.add.at(positives, codes, y)
    return _Groups(np.bincount(codes, minlength=n).astype(float), positives)


def _official_test_groups(rows: pd.DataFrame, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Groups with any official test row; their other rows follow them into test (no leak)."""
    if SOURCE_SPLIT_COLUMN not in rows.columns:
        raise SplitError(f"rows lack column '{SOURCE_SPLIT_COLUMN}' ('train' or 'test' per row)")
    source = rows[SOURCE_SPLIT_COLUMN].astype(str).to_numpy()
    unknown = sorted(set(source) - {"train", "test"})
    if unknown:
        raise SplitError(
            f"column '{SOURCE_SPLIT_COLUMN}' has values {unknown}; expected train/test"
        )
    is_test = source == "test"
    official = np.zeros(n_groups, dtype=bool)
    official[codes[is_test]] = True
    moved = int((official[codes] & ~is_test).sum())
    if moved:
        log.warning(
            "%d source-train rows share a patient or linked group with official test rows; "
            "they go to test to avoid leakage",
            moved,
        )
    return official


# ---------------------------------------------------------------------------------------------
# Candidate draws and their scores
# ---------------------------------------------------------------------------------------------


def _entropy(seed: int) -> int:
    """Any Python int as non-negative entropy for `SeedSequence` (negatives wrap, no clash)."""
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF


def _hold_out(
    groups: _Groups, reference: np.ndarray, fraction: float, seeds: np.ndarray, param: str
) -> np.ndarray:
    """Boolean mask of the held-out groups: the best of the stratified shuffle-split draws."""
    n = len(groups.sizes)
    if n < 2 or math.ceil(fraction * n) >= n:
        raise SplitError(
            f"{n} patient group(s) cannot be split with '{_PARAM}.{param}' = {fraction}: "
            "need at least one group on each side"
        )
    features = groups.features()
    targets = (1.0 - fraction, fraction)
    draws = (_shuffle_draw(features, fraction, int(s)) for s in seeds)
    return _refine(_best(draws, groups, reference, targets), groups, reference, targets) == 1


def _best_kfold(groups: _Groups, reference: np.ndarray, k: int, seeds: np.ndarray) -> np.ndarray:
    """Fold index per group: the best of the stratified k-fold draws, scored over all folds."""
    n = len(groups.sizes)
    if n < k:
        raise SplitError(
            f"{n} patient group(s) left for train/val cannot fill '{_PARAM}.n_folds' = {k} folds"
        )
    features = groups.features()
    draws = (_kfold_draw(features, k, int(s)) for s in seeds)
    targets = (1.0 / k,) * k
    return _refine(_best(draws, groups, reference, targets), groups, reference, targets)


def _shuffle_draw(features: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held = next(splitter.split(np.zeros(len(features)), features))
    parts = np.zeros(len(features), dtype=int)
    parts[held] = 1
    return _fill_empty(parts, 2, seed)


def _kfold_draw(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    parts = np.zeros(len(features), dtype=int)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(features)), features)):
        parts[held] = fold
    return _fill_empty(parts, k, seed)


def _fill_empty(parts: np.ndarray, n_parts: int, seed: int) -> np.ndarray:
    """Give each empty part one group from the largest part (the stratifier may leave a gap)."""
    rng = np.random.default_rng(seed)
    for part in range(n_parts):
        if not (parts == part).any():
            donor = int(np.argmax(np.bincount(parts, minlength=n_parts)))
            parts[rng.choice(np.flatnonzero(parts == donor))] = part
    return parts


def _best(
    draws: Iterator[np.ndarray], groups: _Groups, reference: np.ndarray, targets: Sequence[float]
) -> np.ndarray:
    """The first lowest-scoring draw."""
    best, best_score = None, math.inf
    for parts in draws:
        score = _score(parts, groups, reference, targets)
        if score < best_score:
            best, best_score = parts, score
    assert best is not None
    return best


def _score(
    parts: np.ndarray, groups: _Groups, reference: np.ndarray, targets: Sequence[float]
) -> float:
    """Max |prevalence - reference| over parts and labels, plus the worst row-fraction error."""
    total = groups.sizes.sum()
    worst_prevalence = worst_fraction = 0.0
    for part, target in enumerate(targets):
        mask = parts == part
        if not mask.any():
            return math.inf
        deviation = np.abs(groups.prevalence(mask) - reference)
        worst_prevalence = max(worst_prevalence, float(deviation.max()))
        worst_fraction = max(worst_fraction, abs(groups.sizes[mask].sum() / total - target))
    return worst_prevalence + FRACTION_WEIGHT * worst_fraction


def _refine(
    parts: np.ndarray, groups: _Groups, reference: np.ndarray, targets: Sequence[float]
) -> np.ndarray:
    """Steepest descent on `_score` by swapping two groups between parts.

    The stratifier balances group-level indicators, not image-weighted prevalence, and with
    ~15 patients per fold one patient moves a prevalence by several points; swaps fix that
    while keeping every part's group count (and so its size, up to group sizes).
    """
    parts = parts.copy()
    current = _score(parts, groups, reference, targets)
    for _ in range(4 * len(parts)):
        score, i, j = _best_swap(parts, groups, reference, np.asarray(targets))
        if score >= current - 1e-12:
            break
        parts[i], parts[j] = parts[j], parts[i]
        current = score
    return parts


def _best_swap(
    parts: np.ndarray, groups: _Groups, reference: np.ndarray, targets: np.ndarray
) -> tuple[float, int, int]:
    """Score after the best swap of groups i and j (in different parts), evaluated in blocks."""
    x, s, k = groups.positives, groups.sizes, len(targets)
    total = s.sum()
    pos = np.zeros((k, x.shape[1]))
    np.add.at(pos, parts, x)
    rows = np.bincount(parts, weights=s, minlength=k)
    dev = np.abs(pos / rows[:, None] - reference).max(axis=1)
    frac = np.abs(rows / total - targets)
    best = (math.inf, 0, 0)
    n_blocks = max(1, math.ceil(len(parts) ** 2 * x.shape[1] / 2_000_000))
    for block in np.array_split(np.arange(len(parts)), n_blocks):
        a, b = parts[block][:, None], parts[None, :]
        dx, ds = x[None, :, :] - x[block][:, None, :], s[None, :] - s[block][:, None]
        rows_a, rows_b = rows[a] + ds, rows[b] - ds
        dev_a = np.abs((pos[a] + dx) / rows_a[..., None] - reference).max(axis=-1)
        dev_b = np.abs((pos[b] - dx) / rows_b[..., None] - reference).max(axis=-1)
        others = (np.arange(k) != a[..., None]) & (np.arange(k) != b[..., None])
        score = np.maximum.reduce([np.where(others, dev, 0.0).max(axis=-1), dev_a, dev_b])
        score += FRACTION_WEIGHT * np.maximum.reduce(
            [
                np.where(others, frac, 0.0).max(axis=-1),
                np.abs(rows_a / total - targets[a]),
                np.abs(rows_b / total - targets[b]),
            ]
        )
        score[a == b] = math.inf
        flat = int(np.argmin(score))
        if score.flat[flat] < best[0]:
            best = (float(score.flat[flat]), int(block[flat // len(parts)]), flat % len(parts))
    return best


def _rounded(labels: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {label: round(float(v), 4) for label, v in zip(labels, values, strict=True)}
