"""Pseudo-labels for self-training / distillation: the ensemble's probabilities on unlabelled
scans become soft targets for a student, each such row weighted `distill.weight`.

Which scans may be pseudo-labelled is the pre-training rule (`pretraining_rows`): unlabelled
scans of patients in no validation or test split. A held-out patient's unlabelled scan shaped
by its own pseudo-label would leak that patient into the model evaluated on them, so
`pseudo_labels` re-checks the rule and refuses such rows rather than dropping them silently.

A row's confidence is the mean over biomarkers of |2p - 1|: 0 when every probability is 0.5,
1 when every one is 0 or 1. Rows below `distill.min_confidence` are kept in the table (with
`keep` false, so the table shows what was left out) but not learned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from olives.data.loader import SplitData
from olives.data.prepare import clinical_features, pretraining_rows
from olives.errors import InputError

ROW = "row"
CONFIDENCE = "confidence"
KEEP = "keep"


class PseudoLabelError(InputError, ValueError):
    """Pseudo-labels were asked for rows that may not get them, or the probabilities are bad."""


def eligible_rows(index: pd.DataFrame, patient_column: str) -> pd.DataFrame:
    """The unlabelled rows that may be pseudo-labelled (what the caller predicts on)."""
    rows = pretraining_rows(index, patient_column)
    return rows[rows["split"] == "unlabeled"].reset_index(drop=True)


def confidence(probs: np.ndarray) -> np.ndarray:
    """Per row: the mean over labels of |2p - 1|, in [0, 1]."""
    return np.abs(2.0 * np.asarray(probs, dtype=np.float64) - 1.0).mean(axis=1)


def pseudo_labels(
    index: pd.DataFrame, probs: pd.DataFrame, patient_column: str, min_confidence: float
) -> pd.DataFrame:
    """The index rows of `probs` (a `row` column and one probability column per label) with
    their labels replaced by the probabilities, plus `confidence` and `keep`.

    `index` is the whole split index, so the rule can be checked: every row must be an
    unlabelled scan of a patient in no validation or test split (`PseudoLabelError` if not)."""
    if not 0 <= min_confidence <= 1:
        raise PseudoLabelError(f"min_confidence = {min_confidence} must be in [0, 1]")
    labels = [c for c in probs.columns if c != ROW]
    values = _check_probs(probs, labels, index)
    wanted = index.set_index(ROW).loc[probs[ROW]]
    _check_eligible(index, wanted, patient_column)
    out = wanted.reset_index()
    out[labels] = values
    out[CONFIDENCE] = confidence(values)
    out[KEEP] = out[CONFIDENCE] >= min_confidence
    return out


def with_pseudo_rows(
    train: SplitData,
    pseudo: pd.DataFrame,
    labels: tuple[str, ...],
    clinical: tuple[str, ...],
    weight: float,
) -> SplitData:
    """The train split followed by the kept pseudo-labelled rows (soft labels, loss weight
    `weight`; the labelled rows keep theirs, 1 by default)."""
    if not 0 < weight <= 1:
        raise PseudoLabelError(f"weight = {weight} must be in (0, 1]")
    kept = pseudo[pseudo[KEEP]].reset_index(drop=True)
    own = np.ones(len(train)) if train.weights is None else train.weights
    return SplitData(
        images=train.images,
        rows=np.concatenate([train.rows, kept[ROW].to_numpy(np.int64)]),
        labels=np.concatenate([train.labels, np.array(kept[list(labels)], dtype=np.float32)]),
        clinical=np.concatenate([train.clinical, clinical_features(kept, clinical)]),
        frame=pd.concat([train.frame, kept], ignore_index=True),
        weights=np.concatenate([own, np.full(len(kept), weight)]).astype(np.float32),
    )


def repeated(train: SplitData, n: int) -> SplitData:
    """The train split's rows cycled to `n` rows per epoch (each row `n // len` or one more
    times, in order): the same-steps control makes as many optimizer steps per epoch as a
    student that learns from `n` rows, on the labelled scans alone."""
    if n < len(train):
        raise PseudoLabelError(f"rows = {n} must be at least the {len(train)} labelled rows")
    take = np.resize(np.arange(len(train)), n)
    return SplitData(
        images=train.images,
        rows=train.rows[take],
        labels=train.labels[take],
        clinical=train.clinical[take],
        frame=train.frame.iloc[take].reset_index(drop=True),
        weights=None if train.weights is None else train.weights[take],
    )


def shuffled(table: pd.DataFrame, labels: tuple[str, ...], seed: int) -> pd.DataFrame:
    """A pseudo-label table whose soft labels (with their confidence and `keep`) are permuted
    across its scans: the placebo that keeps the extra images and the label distribution but
    breaks the link between a scan and its label."""
    order = np.random.default_rng(seed).permutation(len(table))
    out = table.copy()
    moved = [*labels, CONFIDENCE, KEEP]
    out[moved] = table[moved].to_numpy()[order]
    out[KEEP] = out[KEEP].astype(bool)
    return out


def _check_probs(probs: pd.DataFrame, labels: list[str], index: pd.DataFrame) -> np.ndarray:
    if ROW not in probs.columns or not labels:
        raise PseudoLabelError(f"probabilities need a '{ROW}' column and one per label")
    missing = [c for c in labels if c not in index.columns]
    if missing:
        raise PseudoLabelError(f"probability columns {missing} are not labels of the index")
    if probs[ROW].duplicated().any():
        raise PseudoLabelError("probabilities list a row twice")
    unknown = sorted(set(probs[ROW]) - set(index[ROW]))
    if unknown:
        raise PseudoLabelError(f"rows {unknown[:5]} are not in the split index")
    values = np.array(probs[labels], dtype=np.float64)
    if not np.all(np.isfinite(values) & (values >= 0) & (values <= 1)):
        raise PseudoLabelError("probabilities must be finite and in [0, 1]")
    return values


def _check_eligible(index: pd.DataFrame, wanted: pd.DataFrame, patient_column: str) -> None:
    labelled = wanted.index[wanted["split"] != "unlabeled"]
    if len(labelled):
        raise PseudoLabelError(f"rows {list(labelled[:5])} are labelled, not unlabelled scans")
    allowed = set(eligible_rows(index, patient_column)[ROW])
    refused = wanted[~wanted.index.isin(allowed)]
    if len(refused):
        patients = sorted(set(refused[patient_column]), key=str)
        raise PseudoLabelError(
            f"patients {patients[:5]} are in the validation or test split: "
            "their scans get no pseudo-label"
        )
