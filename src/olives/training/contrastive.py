"""Supervised contrastive learning with clinical labels (Khosla et al., NeurIPS 2020), as the
OLIVES authors pre-train on BCVA / CST (Kokilepersaud et al., IEEE JBHI 2023).

Each scan comes in two augmented views. For an anchor view, the positives are every other view
whose clinical label equals the anchor's (always including the anchor's own second view); the
loss is the mean, over anchors, of minus the mean log-softmax similarity of its positives
against every other view. Several label kinds (`bcva`, `cst`, `eye`, `patient`) add one loss
each, as in the authors' code. A scan whose label is missing (NaN) has only its own second view
as a positive: for it the loss is SimCLR's. Under DDP (`ContrastiveLoss`) the negatives and
positives of each anchor are those of the global batch, gathered from every rank with gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from olives.errors import InputError
from olives.runtime import Runtime

POSITIVES = ("bcva", "cst", "eye", "patient")


class ContrastiveConfigError(InputError, ValueError):
    """A positive kind or a contrastive setting that cannot work."""


def supcon_loss(
    features: torch.Tensor,
    codes: torch.Tensor,
    temperature: float,
    anchors: slice | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss of `features` [B, V, D] (L2-normalised here) with integer
    label `codes` [B]; views of one scan and scans with equal codes are positives.

    `anchors` (default: every scan) are the scans whose views are anchors; the loss is the mean
    over those views, each contrasted with every view in `features`. Under DDP a rank passes
    the gathered global batch and its own scans, so its anchors see the global negatives while
    it computes only its [2B, 2N] share of the logits (`ContrastiveLoss`)."""
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"features must be [batch, views >= 2, dim], got {tuple(features.shape)}")
    if codes.shape != features.shape[:1]:
        raise ValueError(f"codes must be [{features.shape[0]}], got {tuple(codes.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch, views, _ = features.shape
    scans = anchor_scans(batch, anchors)
    z = F.normalize(features.float(), dim=-1).transpose(0, 1)  # [V, B, D], view-major
    every = z.reshape(batch * views, -1)
    ids = codes.repeat(views)
    # Position of each anchor in `every`: view v of scan i sits at v * batch + i.
    offsets = torch.arange(views, device=z.device)[:, None] * batch
    rows = (offsets + torch.arange(scans.start, scans.stop, device=z.device)).reshape(-1)
    anchor = every if anchors is None else z[:, scans.start : scans.stop].reshape(rows.numel(), -1)
    itself = rows[:, None] == torch.arange(batch * views, device=z.device)[None, :]
    logits = (anchor @ every.T / temperature).masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (ids[rows][:, None] == ids[None, :]) & ~itself
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)
    return -per_anchor.mean()


def anchor_scans(batch: int, anchors: slice | None) -> range:
    """The anchor scans as a non-empty contiguous range of `range(batch)`."""
    scans = range(batch) if anchors is None else range(batch)[anchors]
    if not scans or scans.step != 1:
        raise ValueError(f"anchors must be a non-empty contiguous slice of {batch}, got {anchors}")
    return scans


def label_codes(values: Sequence[float] | np.ndarray, bin_width: float | None = None) -> np.ndarray:
    """Integer codes of clinical values: equal values (or equal bins of `bin_width`) share a
    code; a missing value gets a code of its own, so it is nobody's positive."""
    x = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce").to_numpy(
        dtype=np.float64
    )
    if bin_width is not None:
        x = np.floor(x / bin_width)
    known = ~np.isnan(x)
    out = np.empty(len(x), dtype=np.int64)
    _, out[known] = np.unique(x[known], return_inverse=True)
    out[~known] = int(out[known].max(initial=-1)) + 1 + np.arange(int((~known).sum()))
    return out


def positive_codes(
    frame: pd.DataFrame,
    kinds: Sequence[str],
    patient_column: str,
    cst_bin: float,
    eye_column: str = "eye",
) -> np.ndarray:
    """`[rows, kinds]` label codes for each positive kind (`POSITIVES`)."""
    unknown = [k for k in kinds if k not in POSITIVES]
    if unknown or not kinds:
        raise ContrastiveConfigError(
            f"pretrain.positives must be a non-empty list of {list(POSITIVES)}, got {list(kinds)}"
        )
    sources = {
        "bcva": ("BCVA", None),
        "cst": ("CST", cst_bin),
        "patient": (patient_column, None),
        "eye": (eye_column, None),
    }
    columns = []
    for kind in kinds:
        column, width = sources[kind]
        if column not in frame:
            raise ContrastiveConfigError(
                f"pretrain.positives has {kind!r}, the data lack {column!r}"
            )
        values = frame[column]
        if kind in ("patient", "eye"):  # ids may be text: code them as text
            values = pd.Series(pd.factorize(values.astype(str))[0], index=frame.index)
            values = values.where(frame[column].notna())
        columns.append(label_codes(values.to_numpy(), width))
    return np.stack(columns, axis=1)


class ProjectionHead(nn.Module):
    """The MLP on top of the pooled backbone features that the contrastive loss sees (and that
    is dropped after pre-training): Linear -> ReLU -> Linear, as in SupCon's ResNet heads."""

    def __init__(self, in_features: int, dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def clinical_loss(
    projected: torch.Tensor,
    codes: torch.Tensor,
    temperature: float,
    anchors: slice | None = None,
) -> torch.Tensor:
    """Sum over the positive kinds (columns of `codes` [B, K]) of `supcon_loss` (with the same
    `anchors`)."""
    return sum(
        (supcon_loss(projected, codes[:, k], temperature, anchors) for k in range(codes.shape[1])),
        start=projected.new_zeros(()),
    )


class ContrastiveLoss(nn.Module):
    """`clinical_loss` of the encoder output [2B, D] with the batch's codes [B, K]; under DDP
    (`runtime.distributed`) over the global batch of every rank's scans.

    Why the gradients are exact: with N = W * B scans over W ranks, the single-process loss
    is L = mean over the 2N anchors of l_a(Z). Rank r computes L_r, the mean over its own 2B
    anchors against the gathered Z, so L = (1/W) sum_r L_r, the mean of the ranks' losses that
    `train_epoch` reports. Backward on rank r gives dL_r/dZ; the gather's backward sums over
    the ranks the gradient of each rank's slice, so rank q's features get sum_r dL_r/dz_q, and
    its parameters sum_r dL_r/dtheta through z_q. DDP's all-reduce sums those over q and
    divides by W: (1/W) sum_q sum_r dL_r/dz_q dz_q/dtheta = d((1/W) sum_r L_r)/dtheta = dL/dtheta.
    The sum in the gather's backward and DDP's mean cancel, so nothing is rescaled by W. (A
    backbone with BatchNorm still normalises per rank, as in any DDP run without SyncBatchNorm.)
    """

    def __init__(self, temperature: float, runtime: Runtime | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.runtime = runtime or Runtime(torch.device("cpu"))  # one process when None

    def forward(self, projected: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        batch = codes.shape[0]
        # float32: logits over a 0.07 temperature lose too much in bf16 under CUDA autocast
        projected, codes = projected.float(), codes.long()
        if not self.runtime.distributed:
            views = projected.view(2, batch, -1).transpose(0, 1)
            return clinical_loss(views, codes, self.temperature)
        mine = slice(self.runtime.rank * batch, (self.runtime.rank + 1) * batch)
        every_code = self.runtime.all_gather(codes)  # [W * B, K], rank order, no gradient
        return clinical_loss(
            global_views(projected, self.runtime), every_code, self.temperature, mine
        )


def global_views(projected: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Every rank's [2B, D] output (= [view 1 of its B scans; view 2]), gathered with
    gradients, as [W * B, 2, D] in rank order (the order of `Runtime.all_gather`). The codes
    are computed on the whole frame, so equal codes on two ranks mean equal labels."""
    world, batch = runtime.world_size, projected.shape[0] // 2
    every = GatherWithGradient.apply(projected, runtime.rank, world)  # [W * 2B, D]
    return every.view(world, 2, batch, -1).transpose(1, 2).reshape(world * batch, 2, -1)


class GatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the sum over the ranks of the
    gradient of its own slice (all-reduce, then slice): what `ContrastiveLoss`'s exactness
    rests on. Written here as `torch.distributed.nn.functional.all_gather` is deprecated
    (torch 2.14) and its successor is private; both collectives run on the device, no host sync."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rows = slice(rank * tensor.shape[0], (rank + 1) * tensor.shape[0])
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        total = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(total)
        return total[ctx.rows], None, None
