"""Predictions of a model on one split, on the runtime's device, for train, evaluate and report.

Under torchrun each rank predicts its share of the split and the logits are all-gathered, so
every rank ends with the whole split in row order: metrics and thresholds always use all of it.
The logits stay on the device until the end (no host sync per batch).

Test-time augmentation (`evaluate.tta`, `olives predict --tta`): the model also sees each batch
flipped left-right (`hflip`) and/or shifted left and right by `TTA_SHIFT` of the width with zero
fill (`shift`; the training augment's `max_shift` default and padding, so every view lies inside
what training showed the model); never flipped up-down (a B-scan has a physical up/down). The
views are whole-batch tensor ops on the device, run one after the other (memory of one view).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from olives.config import TTA_SHIFT, EvaluateConfig, TtaView
from olives.data.loader import BatchSource, SplitData
from olives.runtime import Runtime, padded_length

TTA_VIEWS: tuple[str, ...] = typing.get_args(TtaView)

View = Callable[[torch.Tensor], torch.Tensor]


def autocast(amp: bool, runtime: Runtime) -> AbstractContextManager:
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); full precision elsewhere."""
    if not (amp and runtime.cuda):
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def shift_width(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """[..., W] moved right by `pixels` (left when negative); the vacated columns are 0, as
    the training augment's `grid_sample(padding_mode="zeros")` fills them."""
    if pixels == 0:
        return images
    out = torch.zeros_like(images)
    if pixels > 0:
        out[..., pixels:] = images[..., :-pixels]
    else:
        out[..., :pixels] = images[..., -pixels:]
    return out


def tta_views(names: Sequence[str], width: int) -> list[View]:
    """The identity first, then the named views for images `width` pixels wide: `hflip` is
    one view, `shift` two (right and left by `TTA_SHIFT` of the width, at least 1 pixel)."""
    unknown = [n for n in names if n not in TTA_VIEWS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"TTA views {list(names)!r}: each at most once, from {TTA_VIEWS}")
    views: list[View] = [lambda x: x]
    if "hflip" in names:
        views.append(lambda x: x.flip(-1))
    if "shift" in names:
        pixels = max(1, round(TTA_SHIFT * width))
        views += [lambda x: shift_width(x, pixels), lambda x: shift_width(x, -pixels)]
    return views


def view_logits(
    model: nn.Module,
    images: torch.Tensor,
    clinical: torch.Tensor,
    views: Sequence[View],
    amp: bool,
    runtime: Runtime,
) -> torch.Tensor:
    """The mean float32 logit over `views` of one batch (the clinical values are the same in
    every view). Logits, not probabilities, are averaged: the model file's temperatures and
    thresholds act on logits (`ModelBundle.probabilities`), so its calibration and decision
    code take the mean unchanged (the mean logit is the geometric mean of the views' odds);
    averaging probabilities would need a clipped logit to go back to where they act.
    The temperatures and thresholds were fitted on single-view validation logits (train is
    unchanged); a mean over views is a little less spread, so recalibrate if that matters.
    One view (the identity alone) returns that view's logits exactly, not divided by 1."""
    with autocast(amp, runtime):
        total = model(views[0](images), clinical).float()
    for view in views[1:]:
        with autocast(amp, runtime):
            total = total + model(view(images), clinical).float()
    return total if len(views) == 1 else total / len(views)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    source: BatchSource,
    runtime: Runtime,
    batch_size: int,
    amp: bool,
    tta: Sequence[str] = (),
) -> torch.Tensor:
    """Logits [N, L] (float32, on the device) of the whole split, in its row order; with
    `tta` view names, each row's mean logit over the identity and those views."""
    model.eval()
    n = len(source)
    positions = np.resize(np.arange(n), padded_length(n, runtime.world_size))
    mine = positions[runtime.shard(n)]
    views = tta_views(tta, source.data.images.shape[-1])
    parts = []
    for batch in source.batches(mine, batch_size):
        parts.append(view_logits(model, batch.images, batch.clinical, views, amp, runtime))
    num_labels = source.labels.shape[1]
    local = torch.cat(parts) if parts else torch.zeros((0, num_labels), device=runtime.device)
    gathered = runtime.all_gather(local)  # rank 0's share, then rank 1's, ...
    if not runtime.distributed:
        return gathered
    padded = np.arange(len(positions)).reshape(-1, runtime.world_size).T.reshape(-1)
    first_n = np.argsort(padded)[:n]  # where each of the n positions sits in `gathered`
    return gathered[runtime.to_device(torch.from_numpy(first_n))]


def split_logits(
    model: nn.Module,
    data: SplitData,
    runtime: Runtime,
    cfg: EvaluateConfig,
    tta: Sequence[str] = (),
) -> np.ndarray:
    """Host logits [N, L] of `model` on a whole split, in its row order, batched as
    `evaluate.batch_size` / `evaluate.amp` say: the one way evaluate and the paper's stages
    (out-of-fold, unlabelled pool, pseudo-labels) predict a split."""
    logits = predict_logits(
        model, BatchSource(data, runtime), runtime, cfg.batch_size, cfg.amp, tta
    )
    return runtime.to_host(logits)


def predict(
    model: nn.Module,
    source: BatchSource,
    runtime: Runtime,
    batch_size: int,
    amp: bool,
    tta: Sequence[str] = (),
) -> np.ndarray:
    """Sigmoid probabilities [N, L] on the host, in the split's row order."""
    logits = predict_logits(model, source, runtime, batch_size, amp, tta)
    return runtime.to_host(torch.sigmoid(logits))
