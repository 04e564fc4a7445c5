"""Pseudo-labels and soft targets: no held-out patient is pseudo-labelled, the confidence
filter, soft-target losses against torch / torchvision / timm, per-row weights by hand, and
one epoch of `fit` on labelled + pseudo-labelled rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel

from conftest import write_tiny_cache
from olives.config import ConfigError, LossConfig, Params, from_dict
from olives.data.loader import Batch, BatchSource, SplitData, load_splits
from olives.data.prepare import INDEX, read_index
from olives.models import build_model
from olives.runtime import Runtime
from olives.training import loop
from olives.training.distill import (
    PseudoLabelError,
    eligible_rows,
    pseudo_labels,
    repeated,
    shuffled,
    with_pseudo_rows,
)
from olives.training.loop import batch_loss, fit, steps_per_epoch
from olives.training.losses import AsymmetricLoss, BCELoss, FocalLoss, build_loss

CPU = Runtime(torch.device("cpu"))
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
CLINICAL = ("BCVA", "CST")


def toy_index() -> pd.DataFrame:
    """a: train + unlabelled; b: val + unlabelled; c: test + unlabelled; d: unlabelled only."""
    split = ["train", "unlabeled", "val", "unlabeled", "test", "unlabeled", "unlabeled"]
    labelled = np.array([s != "unlabeled" for s in split])
    return pd.DataFrame(
        {
            "row": np.arange(7) + 100,
            "Patient_ID": ["a", "a", "b", "b", "c", "c", "d"],
            "split": split,
            "B1": np.where(labelled, 1.0, np.nan),
            "B2": np.where(labelled, 0.0, np.nan),
        }
    )


def probs_of(rows, b1, b2) -> pd.DataFrame:
    return pd.DataFrame({"row": rows, "B1": b1, "B2": b2})


# ---------------------------------------------------------------------------------------------
# Which rows, which confidence
# ---------------------------------------------------------------------------------------------


def test_only_unlabelled_scans_of_non_held_out_patients_are_eligible():
    index = toy_index()
    assert eligible_rows(index, "Patient_ID")["row"].tolist() == [101, 106]  # a's and d's


@pytest.mark.parametrize("row", [103, 105])  # b (labelled val scan) and c (test) unlabelled
def test_a_held_out_patients_unlabelled_scan_is_refused(row):
    index = toy_index()
    with pytest.raises(PseudoLabelError, match="validation or test"):
        pseudo_labels(index, probs_of([101, row], [0.9, 0.9], [0.1, 0.1]), "Patient_ID", 0.0)


def test_labelled_unknown_or_repeated_rows_and_bad_probabilities_are_refused():
    index = toy_index()
    bad = [
        (probs_of([100], [0.9], [0.1]), "labelled"),
        (probs_of([999], [0.9], [0.1]), "not in the split index"),
        (probs_of([101, 101], [0.9, 0.9], [0.1, 0.1]), "twice"),
        (probs_of([101], [1.2], [0.1]), r"\[0, 1\]"),
        (probs_of([101], [np.nan], [0.1]), "finite"),
        (pd.DataFrame({"row": [101], "B9": [0.5]}), "not labels"),
    ]
    for probs, message in bad:
        with pytest.raises(PseudoLabelError, match=message):
            pseudo_labels(index, probs, "Patient_ID", 0.0)


def test_confidence_is_mean_distance_from_one_half_and_filters_rows():
    index = toy_index()
    probs = probs_of([101, 106], [0.5, 0.95], [1.0, 0.25])
    table = pseudo_labels(index, probs, "Patient_ID", min_confidence=0.6)
    # row 101: (|0| + |1|) / 2 = 0.5; row 106: (0.9 + 0.5) / 2 = 0.7
    np.testing.assert_allclose(table["confidence"], [0.5, 0.7])
    assert table["keep"].tolist() == [False, True]
    assert table["row"].tolist() == [101, 106]
    assert table["Patient_ID"].tolist() == ["a", "d"]
    np.testing.assert_allclose(table[["B1", "B2"]], [[0.5, 1.0], [0.95, 0.25]])
    everything = pseudo_labels(index, probs, "Patient_ID", min_confidence=0.0)
    assert everything["keep"].all()


def test_teacher_distillation_settings_are_validated():
    for bad in ({"weight": 0.0}, {"weight": 1.5}, {"min_confidence": -0.1}, {"tta": []}):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=rf"paper\.teacher\.{key}"):
            from_dict(Params, {"paper": {"teacher": bad}})


# ---------------------------------------------------------------------------------------------
# Soft targets and weights in the losses
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(32, 6, generator=torch.Generator().manual_seed(0)) * 3


def hard(shape) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.4).float()


def soft(shape) -> torch.Tensor:
    values = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    values[0] = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.5])  # hard and soft in one batch
    return values


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, None), (0.0, 0.7)])
def test_focal_on_hard_targets_is_todays_formula_exactly(logits, gamma, alpha):
    y = hard(logits.shape)
    today = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if gamma:
        today = today * torch.exp(gamma * F.logsigmoid(logits * (1 - 2 * y)))
    if alpha is not None:
        today = today * (alpha * y + (1 - alpha) * (1 - y))
    loss = FocalLoss(gamma, alpha, reduction="none")(logits, y)
    torch.testing.assert_close(loss, today, rtol=0, atol=0)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 0.8), (3.0, None)])
def test_focal_on_soft_targets_matches_torchvision(logits, gamma, alpha):
    ops = pytest.importorskip("torchvision.ops")
    y = soft(logits.shape)
    reference = ops.sigmoid_focal_loss(
        logits, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none"
    )
    torch.testing.assert_close(FocalLoss(gamma, alpha, reduction="none")(logits, y), reference)


def test_bce_on_soft_targets_is_cross_entropy_with_a_probability(logits):
    y, pos_weight = soft(logits.shape), torch.tensor([1.0, 2.0, 3.0, 0.5, 1.5, 4.0])
    p = torch.sigmoid(logits.double())
    by_hand = -(pos_weight * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    torch.testing.assert_close(BCELoss(pos_weight.tolist())(logits, y).double(), by_hand)


def test_asl_on_soft_targets_is_timms(logits):
    y = soft(logits.shape)
    reference = AsymmetricLossMultiLabel(4.0, 1.0, 0.05, reduction="mean")(logits, y)
    torch.testing.assert_close(AsymmetricLoss(4.0, 1.0, 0.05)(logits, y), reference)


@pytest.mark.parametrize("name", ["focal", "bce", "asl"])
def test_soft_target_gradients_are_finite_for_extreme_logits(name):
    loss_fn = build_loss(LossConfig(name=name, gamma=0.5), [0.3, 0.3, 0.3])
    x = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 100.0]], requires_grad=True)
    y = torch.tensor([[0.3, 0.7, 0.5], [0.0, 1.0, 0.99]])
    loss = loss_fn(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["focal", "bce", "asl"])
def test_weighted_mean_is_the_hand_computation(logits, name):
    y = soft(logits.shape)
    cfg = LossConfig(name=name, pos_weight="auto")
    prevalence = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    per_element = build_loss(cfg, prevalence, reduction="none")(logits, y)
    weight = torch.ones(len(logits))
    weight[::3] = 0.5  # every third row pseudo-labelled
    loss = build_loss(cfg, prevalence)
    by_hand = sum(
        float(weight[i]) * float(per_element[i, j]) for i in range(32) for j in range(6)
    ) / (32 * 6)
    assert loss(logits, y, weight).item() == pytest.approx(by_hand, rel=1e-5)
    torch.testing.assert_close(loss(logits, y, torch.ones(32)), loss(logits, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="one per row"):
        loss(logits, y, torch.ones(31))


# ---------------------------------------------------------------------------------------------
# Batches and one epoch of training with pseudo-labelled rows
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pseudo_root(tmp_path_factory):
    """The tiny cache with two scans of every train patient turned into unlabelled scans."""
    root = write_tiny_cache(tmp_path_factory.mktemp("distill"), size=32, seed=4)
    index = read_index(root / "data/split")
    train_rows = index[index["split"] == "train"]
    unlabelled = train_rows.groupby("Patient_ID").head(2).index
    index.loc[unlabelled, "split"] = "unlabeled"
    index.loc[unlabelled, list(LABELS)] = np.nan
    index.to_parquet(root / "data/split" / INDEX, index=False)
    return root


def test_pseudo_rows_join_the_train_split_with_their_weight(pseudo_root):
    data = load_splits(pseudo_root / "data/cache", pseudo_root / "data/split", LABELS, CLINICAL)
    index = read_index(pseudo_root / "data/split")
    candidates = eligible_rows(index, "Patient_ID")
    assert set(candidates["Patient_ID"]) <= set(data["train"].frame["Patient_ID"])
    values = np.random.default_rng(0).random((len(candidates), len(LABELS)))
    values[0] = 0.5  # confidence 0: left out
    probs = pd.DataFrame({"row": candidates["row"], **dict(zip(LABELS, values.T, strict=True))})
    table = pseudo_labels(index, probs, "Patient_ID", min_confidence=0.1)
    joined = with_pseudo_rows(data["train"], table, LABELS, CLINICAL, weight=0.5)
    kept = int(table["keep"].sum())
    assert 0 < kept < len(table)
    assert len(joined) == len(data["train"]) + kept
    np.testing.assert_array_equal(joined.weights[: len(data["train"])], 1.0)
    np.testing.assert_array_equal(joined.weights[len(data["train"]) :], 0.5)
    np.testing.assert_allclose(joined.labels[-kept:], table.loc[table["keep"], list(LABELS)])
    batches = BatchSource(joined, CPU).batches(np.arange(len(joined))[::-1].copy(), 8)
    batch = next(iter(batches))
    np.testing.assert_array_equal(batch.weights.numpy(), joined.weights[::-1][:8])
    assert next(iter(BatchSource(data["train"], CPU).batches(np.arange(4), 4))).weights is None


def student_splits(root, seed: int) -> tuple[dict, SplitData]:
    """The splits under `root` and a student's train split: labelled rows and every eligible
    unlabelled row with random soft labels."""
    data = load_splits(root / "data/cache", root / "data/split", LABELS, CLINICAL)
    index = read_index(root / "data/split")
    candidates = eligible_rows(index, "Patient_ID")
    values = np.random.default_rng(seed).random((len(candidates), len(LABELS)))
    probs = pd.DataFrame({"row": candidates["row"], **dict(zip(LABELS, values.T, strict=True))})
    table = pseudo_labels(index, probs, "Patient_ID", min_confidence=0.0)
    return data, with_pseudo_rows(data["train"], table, LABELS, CLINICAL, weight=0.5)


def test_one_epoch_on_labelled_and_pseudo_rows_has_a_finite_loss(pseudo_root):
    data, train = student_splits(pseudo_root, 1)
    p = from_dict(
        Params,
        {
            "model": {"pretrained": "none", "dropout": 0.0},
            "train": {"epochs": 1, "batch_size": 8, "progress": False, "num_threads": 1},
        },
    )
    torch.manual_seed(0)
    model = build_model(p.model, len(LABELS), len(CLINICAL))
    loss_fn = build_loss(p.loss, train.labels.mean(axis=0))
    result = fit(
        model, loss_fn, {"train": train, "val": data["val"]}, p.train,
        seed=0, labels=LABELS, runtime=CPU,
    )  # fmt: skip
    (record,) = result.state.history
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert math.isfinite(record["val_loss"])


def test_batch_loss_passes_weights_only_when_the_split_has_them():
    logits, labels = torch.randn(4, 6), soft((4, 6))
    pixels, clinical, positions = torch.zeros(4, 1, 2, 2), torch.zeros(4, 0), torch.arange(4)
    plain = Batch(pixels, clinical, labels, positions)
    seen = []
    batch_loss(lambda x, y: seen.append(len([x, y])) or x.sum(), logits, plain)  # pretrain's
    assert seen == [2]
    weight = torch.tensor([1.0, 0.5, 0.5, 1.0])
    weighted = Batch(pixels, clinical, labels, positions, weight)
    torch.testing.assert_close(
        batch_loss(BCELoss(), logits, weighted), BCELoss()(logits, labels, weight)
    )


# ---------------------------------------------------------------------------------------------
# The student's controls: as many steps, shuffled labels
# ---------------------------------------------------------------------------------------------


def test_the_same_steps_control_makes_as_many_optimizer_steps_as_the_student(
    pseudo_root, monkeypatch
):
    data, student = student_splits(pseudo_root, 2)
    control = repeated(data["train"], len(student))
    assert len(control) == len(student) > len(data["train"])
    assert set(control.rows) == set(data["train"].rows)  # the labelled scans alone
    counts = np.unique(control.rows, return_counts=True)[1]
    assert counts.max() - counts.min() <= 1  # each as often as the others, within one
    np.testing.assert_array_equal(control.labels[: len(data["train"])], data["train"].labels)
    for batch_size in (4, 8, 32):
        assert steps_per_epoch(len(control), batch_size, 1) == steps_per_epoch(
            len(student), batch_size, 1
        )
    p = from_dict(
        Params,
        {
            "model": {"pretrained": "none", "dropout": 0.0},
            "train": {"epochs": 2, "batch_size": 8, "progress": False, "num_threads": 1},
        },
    )
    made = []  # each run's optimizer, to read its step count afterwards
    create = loop.create_optimizer_v2
    monkeypatch.setattr(
        loop, "create_optimizer_v2", lambda *a, **k: made.append(create(*a, **k)) or made[-1]
    )
    steps = []
    for train in (student, control):
        torch.manual_seed(0)
        model = build_model(p.model, len(LABELS), len(CLINICAL))
        loss_fn = build_loss(p.loss, data["train"].labels.mean(axis=0))
        splits = {"train": train, "val": data["val"]}
        fit(model, loss_fn, splits, p.train, seed=0, labels=LABELS, runtime=CPU)
        state = made[-1].state
        steps.append(max(int(s["step"]) for s in state.values() if "step" in s))
    assert steps[0] == steps[1] == 2 * steps_per_epoch(len(student), 8, 1)
    with pytest.raises(PseudoLabelError, match=r"rows = 1 must be at least"):
        repeated(data["train"], 1)


def test_shuffled_pseudo_labels_keep_the_scans_and_the_label_mix_but_not_the_pairing():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "row": np.arange(50),
            "B1": rng.random(50),
            "B2": rng.random(50),
            "confidence": rng.random(50),
            "keep": rng.random(50) > 0.3,
        }
    )
    out = shuffled(rows, ("B1", "B2"), seed=3)
    assert out["row"].tolist() == rows["row"].tolist()
    assert sorted(out["B1"]) == sorted(rows["B1"]) and not out["B1"].equals(rows["B1"])
    # a row's labels move together, with their confidence and keep
    moved = set(zip(out["B1"], out["B2"], out["confidence"], out["keep"], strict=True))
    assert moved == set(zip(rows["B1"], rows["B2"], rows["confidence"], rows["keep"], strict=True))
    assert out.equals(shuffled(rows, ("B1", "B2"), seed=3))  # seeded
