"""Focal, BCE and asymmetric losses against reference formulas; config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel

from olives.config import ConfigError, LossConfig
from olives.training.losses import (
    AsymmetricLoss,
    BCELoss,
    FocalLoss,
    build_loss,
    expected_initial_loss,
    resolve_alpha,
)

PREVALENCE = [0.05, 0.2, 0.35, 0.5, 0.7, 0.95]


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(64, 6) * 3
    targets = (torch.rand(64, 6) < torch.tensor(PREVALENCE)).float()
    return logits, targets


def test_focal_with_gamma_0_and_no_alpha_is_bce(batch) -> None:
    logits, targets = batch
    loss = build_loss(LossConfig(name="focal", gamma=0.0, alpha=None), PREVALENCE)
    torch.testing.assert_close(
        loss(logits, targets), F.binary_cross_entropy_with_logits(logits, targets)
    )


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 0.8), (3.0, None)])
def test_focal_matches_torchvision(batch, gamma, alpha) -> None:
    ops = pytest.importorskip("torchvision.ops")
    logits, targets = batch
    reference = ops.sigmoid_focal_loss(
        logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean"
    )
    torch.testing.assert_close(FocalLoss(gamma, alpha)(logits, targets), reference)


def test_per_biomarker_alpha_applies_column_by_column(batch) -> None:
    logits, targets = batch
    alphas = [0.1, 0.25, 0.5, 0.6, 0.75, 0.9]
    per_element = FocalLoss(2.0, alphas, reduction="none")(logits, targets)
    for column, alpha in enumerate(alphas):
        scalar = FocalLoss(2.0, alpha)(logits[:, column], targets[:, column])
        torch.testing.assert_close(per_element[:, column].mean(), scalar)
    torch.testing.assert_close(FocalLoss(2.0, alphas)(logits, targets), per_element.mean())


def test_auto_alpha_and_pos_weight_follow_prevalence() -> None:
    p = np.array(PREVALENCE)
    np.testing.assert_allclose(resolve_alpha("auto", p), [0.9, 0.8, 0.65, 0.5, 0.3, 0.1])
    bce = build_loss(LossConfig(name="bce", pos_weight="auto"), PREVALENCE)
    expected = np.clip((1 - p) / p, 0.1, 10)
    np.testing.assert_allclose(bce.pos_weight.numpy(), expected, rtol=1e-6)
    focal = build_loss(LossConfig(alpha="auto"), [0.0, 1.0])
    np.testing.assert_allclose(focal.alpha.numpy(), [0.9, 0.1], rtol=1e-6)


def test_bce_pos_weight_matches_torch(batch) -> None:
    logits, targets = batch
    weights = [1.0, 2.0, 3.0, 0.5, 1.5, 4.0]
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))(logits, targets)
    loss = build_loss(LossConfig(name="bce", pos_weight=weights), PREVALENCE)
    torch.testing.assert_close(loss(logits, targets), reference)


def test_asl_is_the_per_element_mean_of_the_paper_formula(batch) -> None:
    logits, targets = batch
    gamma_neg, gamma_pos, clip = 4.0, 1.0, 0.05
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0)  # shifted probability for negatives
    pos = targets * (1 - p) ** gamma_pos * torch.log(p.clamp(min=1e-8))
    neg = (1 - targets) * p_neg**gamma_neg * torch.log((1 - p_neg).clamp(min=1e-8))
    reference = -(pos + neg).mean()
    loss = build_loss(LossConfig(name="asl", gamma_neg=gamma_neg, gamma_pos=gamma_pos), PREVALENCE)
    torch.testing.assert_close(loss(logits, targets), reference)
    timm_sum = AsymmetricLossMultiLabel(gamma_neg, gamma_pos, clip, reduction="sum")
    torch.testing.assert_close(loss(logits, targets), timm_sum(logits, targets) / logits.numel())


@pytest.mark.parametrize("name", ["focal", "bce", "asl"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_gradients_are_finite_for_extreme_logits(name, dtype) -> None:
    cfg = LossConfig(name=name, gamma=0.5, pos_weight="auto")
    loss_fn = build_loss(cfg, PREVALENCE[:4])
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]] * 2, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    if dtype is None:
        loss = loss_fn(logits, targets)
    else:
        try:
            with torch.autocast("cpu", dtype=dtype):
                loss = loss_fn(logits.to(dtype), targets)
        except RuntimeError as exc:  # pragma: no cover - depends on the CPU autocast build
            pytest.skip(f"CPU autocast {dtype}: {exc}")
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 1.0
    assert torch.isfinite(logits.grad).all()
    # ASL (timm) clamps probabilities at eps=1e-8: saturated wrong logits get no gradient.
    assert name == "asl" or logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("cfg", "parameter"),
    [
        (LossConfig(alpha=[0.5, 0.5]), "loss.alpha"),
        (LossConfig(alpha=1.5), "loss.alpha"),
        (LossConfig(alpha=[0.1, 0.2, 0.3, 0.4, 0.5, -0.1]), "loss.alpha"),
        (LossConfig(alpha="balanced"), "loss.alpha"),
        (LossConfig(gamma=-1.0), "loss.gamma"),
        (LossConfig(name="bce", pos_weight=[1.0]), "loss.pos_weight"),
        (LossConfig(name="bce", pos_weight=[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]), "loss.pos_weight"),
        (LossConfig(name="asl", gamma_neg=-2.0), "loss.gamma_neg"),
        (LossConfig(name="asl", clip=1.0), "loss.clip"),
    ],
)
def test_bad_configs_name_the_parameter(cfg, parameter) -> None:
    with pytest.raises(ConfigError, match=parameter.replace(".", r"\.")):
        build_loss(cfg, PREVALENCE)


def test_bad_prevalence_is_rejected() -> None:
    with pytest.raises(ValueError, match="prevalence"):
        build_loss(LossConfig(), [0.2, 1.5])


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(),
        LossConfig(alpha=0.25),
        LossConfig(name="bce"),
        LossConfig(name="bce", pos_weight="auto"),
        LossConfig(name="asl"),
    ],
)
def test_expected_initial_loss_matches_a_big_sample(cfg) -> None:
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor(PREVALENCE)
    targets = (torch.rand(20_000, 6, generator=generator) < p).float()
    logits = torch.log(p / (1 - p)).expand_as(targets)
    sampled = build_loss(cfg, PREVALENCE)(logits, targets).item()
    expected = expected_initial_loss(cfg, PREVALENCE)
    assert expected > 0
    assert sampled == pytest.approx(expected, rel=0.03)


def test_expected_initial_loss_of_bce_is_mean_entropy() -> None:
    p = np.array(PREVALENCE)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean()
    assert expected_initial_loss(LossConfig(name="bce"), PREVALENCE) == pytest.approx(entropy)


def test_loss_modules_move_with_their_buffers() -> None:
    loss = BCELoss([2.0, 3.0]).to(torch.float64)
    assert loss.pos_weight.dtype == torch.float64
    assert isinstance(build_loss(LossConfig(name="asl"), PREVALENCE), AsymmetricLoss)
