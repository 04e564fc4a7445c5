"""Clinically supervised contrastive pre-training of the image backbone (the `pretrain` stage's
core), on the train patients' labelled and unlabelled scans.

The step is the train stage's own (`training.train_epoch` / `train_step`: uint8 cache -> device
-> batched tensor augmentation -> forward -> backward), with two changes: `TwoViews` makes two
augmented views of each batch, and the model is an `Encoder` (backbone + projection head) whose
output the contrastive loss reads as `[batch, 2, dim]`. The batch's "labels" are the integer
codes of the positive kinds (`contrastive.positive_codes`); under DDP the loss contrasts each
rank's anchors with the global batch of every rank's views (`ContrastiveLoss`). The loop is
`build_loop`'s, without a validation split; resumable through the same `Checkpoint`;
deterministic on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from olives.config import AugmentConfig, TrainConfig
from olives.data.loader import SplitData
from olives.models.backbone import GreyInput, backbone_input
from olives.runtime import Runtime
from olives.training.augment import BatchAugment
from olives.training.checkpoint import Checkpoint, TrainState
from olives.training.contrastive import ContrastiveLoss, ProjectionHead
from olives.training.loop import build_loop, configure_torch, steps_per_epoch, train_epoch

log = logging.getLogger(__name__)


class Encoder(nn.Module):
    """Grey input -> timm backbone (pooled features) -> projection head."""

    def __init__(self, backbone: nn.Module, data_config: dict[str, Any], dim: int) -> None:
        super().__init__()
        self.data_config = dict(data_config)
        self.grey = GreyInput(data_config["mean"], data_config["std"])
        self.backbone = backbone
        self.head = ProjectionHead(int(backbone.num_features), dim)

    def forward(self, images: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone(backbone_input(self.grey(images), self.backbone)))


class TwoViews(nn.Module):
    """Two independently augmented views of a batch, stacked along the batch axis [2B, ...]."""

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        self.augment = BatchAugment(cfg)

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([self.augment(images, generator), self.augment(images, generator)])


@dataclass(frozen=True)
class PretrainResult:
    encoder: Encoder
    state: TrainState


def pretrain(
    encoder: Encoder,
    data: SplitData,
    cfg: TrainConfig,
    temperature: float,
    *,
    seed: int,
    runtime: Runtime,
    checkpoint: Checkpoint | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> PretrainResult:
    """`cfg.epochs` epochs of the contrastive loss over `data` (labels = codes); AdamW with
    warm-up and cosine decay, resumed from `checkpoint` when it is this run's."""
    configure_torch(cfg, runtime)
    if steps_per_epoch(len(data), cfg.batch_size, runtime.world_size) == 0:
        raise ValueError(
            f"pretrain: {len(data)} scans make no full batch of {cfg.batch_size} per rank"
        )
    loss_fn, views = ContrastiveLoss(temperature, runtime), TwoViews(cfg.augment)
    loop = build_loop(encoder, loss_fn, {"train": data}, cfg, seed, (), runtime, augment=views)
    net, optimizer = loop.net, loop.optimizer
    state = checkpoint.load(net, optimizer, loop.scheduler) if checkpoint else None
    state = state or TrainState()
    while state.epoch < cfg.epochs:
        record = {"epoch": state.epoch, **train_epoch(loop, state.epoch)}
        state.history.append(record)
        state.epoch += 1
        if runtime.is_main:
            log.info("pretrain epoch %d: loss %.4f", record["epoch"], record["train_loss"])
            if checkpoint is not None:
                checkpoint.save(net, optimizer, loop.scheduler, state)
            if on_epoch is not None:
                on_epoch(record)
        runtime.barrier()
    return PretrainResult(net, state)


def codes_as_split(images: np.ndarray, frame: pd.DataFrame, codes: np.ndarray) -> SplitData:
    """The pre-training rows as a `SplitData` whose labels are the positive codes."""
    return SplitData(
        images=images,
        rows=frame["row"].to_numpy(np.int64),
        labels=codes.astype(np.float32),
        clinical=np.zeros((len(frame), 0), dtype=np.float32),
        frame=frame,
    )
