"""Multi-label losses for the 6 biomarkers: focal (default), BCE, asymmetric (ASL).

Every loss takes logits [B, L] and targets [B, L] in [0, 1], computes in float32 (safe under
autocast) and by default returns the mean over all B * L elements, so the three are on one
scale. Parameters are validated when the loss is built; errors name the `loss.*` parameter.

Soft targets (pseudo-labels, `training/distill.py`) follow the libraries' own definition:
BCE is torch's (cross-entropy with a probability), focal is torchvision's `sigmoid_focal_loss`
(p_t = p * y + (1 - p) * (1 - y)) and ASL is timm's; on 0/1 targets each is exactly the hard
loss. An optional per-row `weight` [B] scales each row's terms before the mean over B * L, so a
row of weight 0.5 moves the model half as far as a labelled row whatever else is in the batch
(dividing by the weights' sum instead would let a batch of pseudo-labelled rows count in full).

`alpha: auto` (focal) sets alpha_l = 1 - prevalence_l: the positive term of a biomarker seen in
10 % of scans gets weight 0.9 and its negatives 0.1, balancing the two classes' total weight.
It is clipped to [0.1, 0.9] because a biomarker that is (almost) absent from the training split
would otherwise get alpha ~ 1, leaving its negatives with no weight at all, and its predictions
would drift to "always present". `pos_weight: auto` (BCE) = (1 - p) / p, clipped to [0.1, 10]
for the same reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel
from torch import nn

from olives.config import ConfigError, LossConfig

Reduction = Literal["mean", "none"]
ALPHA_CLIP = (0.1, 0.9)
POS_WEIGHT_CLIP = (0.1, 10.0)


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017): alpha_t * (1 - p_t)^gamma * BCE.

    The modulating factor (1 - p_t)^gamma is computed as exp(gamma * log(1 - p_t)), finite (with
    finite gradients) even for logits of +-100 and any gamma >= 0, where a power of 1 - p_t
    underflows to 0 and its gradient to inf * 0 (`_log_one_minus_pt`).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if not gamma >= 0:
            raise ConfigError(f"'loss.gamma' = {gamma} must be >= 0")
        self.gamma = float(gamma)
        self.reduction = _check_reduction(reduction)
        alpha_t = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        if alpha_t is not None and (alpha_t.dim() > 1 or not _in_unit(alpha_t)):
            raise ConfigError(f"'loss.alpha' = {alpha} must be a number or list in [0, 1]")
        self.register_buffer("alpha", alpha_t)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, y = _as_float(logits, targets)
        _check_alpha_width(self.alpha, x)
        loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        if self.gamma:
            loss = loss * torch.exp(self.gamma * _log_one_minus_pt(x, y))
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        return _reduce(loss, self.reduction, weight)


class BCELoss(nn.Module):
    """`BCEWithLogitsLoss` in float32 with an optional per-biomarker `pos_weight`."""

    def __init__(
        self, pos_weight: Sequence[float] | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        if weight is not None and (weight.dim() != 1 or not bool((weight > 0).all())):
            raise ConfigError(f"'loss.pos_weight' = {pos_weight} must be a list of values > 0")
        self.register_buffer("pos_weight", weight)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, y = _as_float(logits, targets)
        loss = F.binary_cross_entropy_with_logits(
            x, y, pos_weight=self.pos_weight, reduction="none"
        )
        return _reduce(loss, self.reduction, weight)


class AsymmetricLoss(nn.Module):
    """timm's `AsymmetricLossMultiLabel` (Ridnik et al. 2021), averaged over elements.

    timm's default reduction is not a per-element mean ('batchmean' in timm 1.0.31, a plain sum
    in older releases), so its scale would grow with the number of labels (or the batch size)
    and not compare with focal/BCE. We ask timm for per-element values and take the mean; timm
    versions without `reduction` return the sum, which we divide by the element count.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        for key, value in (("gamma_neg", gamma_neg), ("gamma_pos", gamma_pos)):
            if not value >= 0:
                raise ConfigError(f"'loss.{key}' = {value} must be >= 0")
        if not 0 <= clip < 1:
            raise ConfigError(f"'loss.clip' = {clip} must be in [0, 1)")
        self.reduction = _check_reduction(reduction)
        self.per_element = "reduction" in inspect.signature(AsymmetricLossMultiLabel).parameters
        extra = {"reduction": "none"} if self.per_element else {}
        self.asl = AsymmetricLossMultiLabel(gamma_neg, gamma_pos, clip, **extra)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, y = _as_float(logits, targets)
        if self.per_element:
            return _reduce(self.asl(x, y), self.reduction, weight)
        if self.reduction == "none" or weight is not None:
            raise RuntimeError("reduction='none' or a weight needs a timm ASL with `reduction`")
        return self.asl(x, y) / x.numel()


def build_loss(
    cfg: LossConfig, prevalence: Sequence[float], reduction: Reduction = "mean"
) -> nn.Module:
    """The configured loss; `prevalence` (train split, one per label) resolves `auto`."""
    p = _check_prevalence(prevalence)
    if cfg.name == "focal":
        return FocalLoss(cfg.gamma, resolve_alpha(cfg.alpha, p), reduction)
    if cfg.name == "bce":
        return BCELoss(resolve_pos_weight(cfg.pos_weight, p), reduction)
    if cfg.name == "asl":
        return AsymmetricLoss(cfg.gamma_neg, cfg.gamma_pos, cfg.clip, reduction)
    raise ConfigError(f"'loss.name' = {cfg.name!r} is not one of 'focal', 'bce', 'asl'")


def resolve_alpha(
    alpha: float | list[float] | str | None, prevalence: np.ndarray
) -> float | list[float] | None:
    """`loss.alpha` as None, a float or one float per label (`auto` = 1 - p, clipped)."""
    if alpha is None or isinstance(alpha, (int, float)):
        return alpha
    if alpha == "auto":
        return np.clip(1.0 - prevalence, *ALPHA_CLIP).tolist()
    if isinstance(alpha, str):
        raise ConfigError(f"'loss.alpha' = {alpha!r} must be a number, a list, 'auto' or null")
    return _one_per_label("loss.alpha", alpha, len(prevalence))


def resolve_pos_weight(
    pos_weight: list[float] | str | None, prevalence: np.ndarray
) -> list[float] | None:
    """`loss.pos_weight` as None or one float per label (`auto` = (1 - p) / p, clipped)."""
    if pos_weight is None:
        return None
    if pos_weight == "auto":
        p = np.clip(prevalence, 1e-6, 1.0)
        return np.clip((1.0 - p) / p, *POS_WEIGHT_CLIP).tolist()
    if isinstance(pos_weight, str):
        raise ConfigError(f"'loss.pos_weight' = {pos_weight!r} must be a list, 'auto' or null")
    return _one_per_label("loss.pos_weight", pos_weight, len(prevalence))


def _one_per_label(name: str, values: Sequence[float], n_labels: int) -> list[float]:
    if len(values) != n_labels:
        raise ConfigError(f"'{name}' has {len(values)} values but there are {n_labels} labels")
    return list(values)


def expected_initial_loss(cfg: LossConfig, prevalence: Sequence[float]) -> float:
    """Expected loss when every logit is logit(p_l) and labels are Bernoulli(p_l).

    Exact: E = mean_l [p_l * loss(x_l, 1) + (1 - p_l) * loss(x_l, 0)], with x_l = logit(p_l)
    clipped like `BiomarkerNet.init_head_bias`. The trainer compares its first batches to it.
    """
    p = _check_prevalence(prevalence)
    loss = build_loss(cfg, p, reduction="none")
    q = np.clip(p, 1e-4, 1 - 1e-4)
    logits = torch.tensor(np.log(q / (1 - q)), dtype=torch.float32).expand(2, -1)
    targets = torch.tensor([[1.0], [0.0]]).expand(2, len(p))
    with torch.no_grad():
        per_element = loss(logits, targets).double().numpy()
    return float(np.mean(p * per_element[0] + (1 - p) * per_element[1]))


def _check_prevalence(prevalence: Sequence[float]) -> np.ndarray:
    p = np.asarray(prevalence, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"prevalence must be one value in [0, 1] per label, got {prevalence!r}")
    return p


def _check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return reduction


def _in_unit(values: torch.Tensor) -> bool:
    return bool(((values >= 0) & (values <= 1)).all())


def _check_alpha_width(alpha: torch.Tensor | None, logits: torch.Tensor) -> None:
    if alpha is not None and alpha.dim() == 1 and alpha.shape[0] != logits.shape[-1]:
        raise ValueError(f"loss.alpha has {alpha.shape[0]} values, logits {logits.shape[-1]}")


def _as_float(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return logits.float(), targets.float()


def _log_one_minus_pt(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(1 - p_t) = log(y * (1 - p) + (1 - y) * p), from log-sigmoids: on 0/1 targets one
    term is log(0) = -inf, which `logaddexp` drops exactly (and with zero gradient)."""
    return torch.logaddexp(torch.log(y) + F.logsigmoid(-x), torch.log1p(-y) + F.logsigmoid(x))


def _reduce(loss: torch.Tensor, reduction: str, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-row weights [B] scale each row's terms; the mean stays over every element."""
    if weight is not None:
        if weight.shape != loss.shape[:1]:
            raise ValueError(f"weight {tuple(weight.shape)} must be [{loss.shape[0]}], one per row")
        loss = loss * weight.to(loss.dtype).view(-1, *([1] * (loss.dim() - 1)))
    return loss.mean() if reduction == "mean" else loss
