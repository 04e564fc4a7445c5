"""The training loop: batches on the device, whole-batch augmentation, AdamW with warm-up and
cosine decay, early stopping on a validation metric, resumable checkpoints, DDP under torchrun.

The core takes a ready model and loss, the `train` config, the seed and the label names; it
knows nothing of files or MLflow (the `train` stage does that through `on_epoch`).

GPU: batches arrive as uint8 and become float there, augmentation draws its random numbers on
the device, the loss is summed on the device and read back only every `PROGRESS_EVERY` steps
for the progress bar (never when the bar is off), so the host stays out of the step.
Determinism: every source of randomness in an epoch (shuffle order, augmentation, dropout) is
seeded from `(seed, epoch)` and checkpoints are written at epoch boundaries, so a run resumed
from its last checkpoint ends with the same weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from tqdm.auto import tqdm

from olives.config import TrainConfig
from olives.data.loader import (
    Batch,
    BatchSource,
    SplitData,
    batch_spans,
    epoch_order,
    use_device_cache,
)
from olives.errors import InputError
from olives.evaluation.calibration import fit_decisions
from olives.evaluation.metrics import per_label_metrics
from olives.io import none_if_nan
from olives.models.inference import autocast, predict_logits
from olives.runtime import Runtime, padded_length, unwrap
from olives.training.augment import BatchAugment
from olives.training.checkpoint import Checkpoint, TrainState
from olives.training.clinical_dropout import ClinicalDropout, clinical_fill

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10  # steps between progress-bar updates (each one reads the loss back)
INITIAL_LOSS_BATCHES = 4

EpochHook = Callable[[dict[str, Any]], None]


class InitialLossError(InputError, RuntimeError):
    """The loss at initialisation is far from its expected value: a wiring bug."""


@dataclass
class TrainResult:
    model: nn.Module
    thresholds: np.ndarray  # tuned on the calibrated validation probabilities
    temperatures: np.ndarray  # per-biomarker temperature scaling (ones when not calibrated)
    state: TrainState
    val_summary: dict[str, Any]
    val_table: Any  # per-label metrics DataFrame


@dataclass
class Loop:
    """Everything one epoch needs, built once by `fit`."""

    net: nn.Module  # the plain model (weights, eval, checkpoints)
    model: nn.Module  # what the training step calls: DDP and/or compiled around `net`
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    augment: BatchAugment
    clinical_dropout: ClinicalDropout
    train: BatchSource
    val: BatchSource | None  # None: no validation (contrastive pre-training)
    cfg: TrainConfig
    seed: int
    labels: tuple[str, ...]
    runtime: Runtime
    steps_per_epoch: int


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    data: dict[str, SplitData],
    cfg: TrainConfig,
    *,
    seed: int,
    labels: tuple[str, ...],
    runtime: Runtime,
    checkpoint: Checkpoint | None = None,
    expected_loss: float | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train on `data['train']`, select on `data['val']`, resume from `checkpoint` if it is
    this run's; `expected_loss` (the analytic loss at initialisation) enables the start check."""
    configure_torch(cfg, runtime)
    loop = build_loop(model, loss_fn, data, cfg, seed, labels, runtime)
    state = None
    if checkpoint is not None:
        state = checkpoint.load(loop.net, loop.optimizer, loop.scheduler)
    if state is None:
        state = TrainState()
        if expected_loss is not None:
            check_initial_loss(loop, expected_loss)
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
        record = {"epoch": state.epoch, **train_epoch(loop, state.epoch)}
        record.update(validate(loop)["summary"])
        update_state(state, record, loop.net, cfg.monitor)
        if runtime.is_main:
            log.info(format_record(record))
            if checkpoint is not None:
                checkpoint.save(loop.net, loop.optimizer, loop.scheduler, state)
            if on_epoch is not None:
                on_epoch(record)
        runtime.barrier()
    if state.best_weights is not None:
        loop.net.load_state_dict(state.best_weights)
    val = validate(loop)
    truth = data["val"].labels
    temperatures, thresholds, probs = fit_decisions(val["logits"], truth, cfg.calibrate)
    table = per_label_metrics(truth, probs, thresholds, labels)
    return TrainResult(loop.net, thresholds, temperatures, state, val["summary"], table)


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


def configure_torch(cfg: TrainConfig, runtime: Runtime) -> None:
    """Threads; cuDNN autotuning on CUDA (off by default: on an H200 it made EfficientNet-Lite0
    steps 3.5 % faster but its first step 22 s slower); deterministic kernels on the CPU, with
    subnormal floats flushed to zero (x86 computes with them up to 100x slower; a model that
    fits its batches well makes them: benchmarks/train_throughput.py's pure compute ran at
    17 images/s with them, 74 without, on a 2-core EPYC)."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    torch.set_flush_denormal(True)
    if runtime.cuda:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_loop(
    model: nn.Module,
    loss_fn: nn.Module,
    data: dict[str, SplitData],
    cfg: TrainConfig,
    seed: int,
    labels: tuple[str, ...],
    runtime: Runtime,
    augment: nn.Module | None = None,
) -> Loop:
    """Model, loss and data on the device; optimizer, scheduler, DDP and compile around them.
    `data` without "val" builds a loop with no validation (pre-training); `augment` replaces
    the batch augmentation (pre-training's two views)."""
    net = model.to(runtime.device)
    if cfg.freeze_backbone:
        freeze_backbone(net)
    if cfg.channels_last:  # CPU too: 1.5-1.7x faster Lite0 steps on a 2-core EPYC (oneDNN)
        net.to(memory_format=torch.channels_last)
    wrapped = runtime.wrap(net)
    train_model = torch.compile(wrapped) if cfg.compile else wrapped
    on_device = use_device_cache(cfg.device_cache, runtime, data["train"].nbytes)
    extra = {"fused": True} if runtime.cuda else {}
    if cfg.layer_decay is not None:
        extra["layer_decay"] = cfg.layer_decay
    optimizer = create_optimizer_v2(net, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    steps = steps_per_epoch(len(data["train"]), cfg.batch_size, runtime.world_size)
    val = data.get("val")
    return Loop(
        net=net,
        model=train_model,
        loss_fn=loss_fn.to(runtime.device),
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, steps),
        scaler=torch.amp.GradScaler("cuda", enabled=use_fp16(cfg.amp, runtime)),
        augment=(augment or BatchAugment(cfg.augment)).to(runtime.device),
        clinical_dropout=ClinicalDropout(
            cfg.clinical_dropout, clinical_fill(data["train"].clinical)
        ).to(runtime.device),
        train=BatchSource(data["train"], runtime, on_device),
        val=None if val is None else BatchSource(val, runtime, on_device),
        cfg=cfg,
        seed=seed,
        labels=labels,
        runtime=runtime,
        steps_per_epoch=steps,
    )


def freeze_backbone(net: nn.Module) -> None:
    """Linear evaluation: the backbone's weights get no gradient (and no optimizer state)."""
    backbone = getattr(net, "backbone", None)
    if backbone is None:
        raise ValueError(
            "train.freeze_backbone needs an image backbone (fusion 'clinical' has none)"
        )
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)


def train_mode(loop: Loop) -> None:
    """Train mode, except a frozen backbone, whose batch-norm statistics stay as pre-trained."""
    loop.model.train()
    if loop.cfg.freeze_backbone:
        loop.net.backbone.eval()


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch: full batches of one rank's share of `n` rows."""
    share = padded_length(n, world_size) // world_size
    return len(batch_spans(share, batch_size, drop_last=True))


def use_fp16(amp: bool, runtime: Runtime) -> bool:
    """fp16 needs a GradScaler; bf16 (Ampere and later) does not."""
    return amp and runtime.cuda and not torch.cuda.is_bf16_supported()


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> CosineLRScheduler:
    """Linear warm-up then cosine decay, stepped per update (timm's scheduler)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return CosineLRScheduler(
        optimizer,
        t_initial=total,
        lr_min=cfg.lr * cfg.min_lr_ratio,
        warmup_t=warmup,
        warmup_lr_init=cfg.lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def check_initial_loss(loop: Loop, expected: float) -> float:
    """Karpathy's check: with the head bias at logit(prevalence), the first loss must be close
    to its analytic value; a large gap means a wiring bug (labels, normalisation, loss).
    Every rank checks the same batches, so all of them stop together."""
    loop.net.eval()
    size = loop.cfg.batch_size
    order = epoch_order(len(loop.train), loop.seed + 1, epoch=0, shuffle=True)
    losses = []
    with torch.no_grad():
        for batch in loop.train.batches(order[: size * INITIAL_LOSS_BATCHES], size):
            losses.append(batch_loss(loop.loss_fn, loop.net(batch.images, batch.clinical), batch))
    observed = float(loop.runtime.to_host(torch.stack(losses).mean()))
    if abs(observed - expected) > 0.25 * expected + 0.02:
        raise InitialLossError(
            f"initial loss {observed:.4f} is far from its expected {expected:.4f}; check the "
            "labels and the input normalisation (disable with train.check_initial_loss: false)"
        )
    log.info("initial loss %.4f (expected %.4f)", observed, expected)
    return observed


# ---------------------------------------------------------------------------------------------
# Epochs
# ---------------------------------------------------------------------------------------------


def train_epoch(loop: Loop, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard; returns the mean loss, last lr and images/s (all ranks)."""
    cfg, runtime = loop.cfg, loop.runtime
    train_mode(loop)
    epoch_seed = loop.seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)  # dropout / drop-path
    generator = runtime.generator(epoch_seed)
    order = epoch_order(len(loop.train), loop.seed, epoch, True, runtime.rank, runtime.world_size)
    total = torch.zeros((), device=runtime.device, dtype=torch.float64)
    seen = 0
    bar = tqdm(
        total=loop.steps_per_epoch,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not (cfg.progress and runtime.is_main),
    )
    start = time.perf_counter()
    for step, batch in enumerate(loop.train.batches(order, cfg.batch_size, drop_last=True)):
        loss = train_step(loop, batch, generator)
        loop.scheduler.step_update(epoch * loop.steps_per_epoch + step + 1)
        total += loss.detach().double() * len(batch.labels)
        seen += len(batch.labels)
        if not bar.disable and ((step + 1) % PROGRESS_EVERY == 0 or step + 1 == bar.total):
            bar.update(step + 1 - bar.n)
            bar.set_postfix(loss=f"{float(runtime.to_host(total)) / seen:.4f}")
    bar.close()
    runtime.broadcast_buffers(loop.net)  # validation and checkpoints see rank 0's statistics
    sums = runtime.all_gather(torch.stack([total, total.new_tensor(float(seen))]))
    loss_sum, count = runtime.to_host(sums.view(-1, 2).sum(dim=0)).tolist()
    seconds = time.perf_counter() - start
    return {
        "train_loss": loss_sum / max(count, 1),
        "lr": loop.optimizer.param_groups[0]["lr"],
        "epoch_seconds": seconds,
        "images_per_second": count / seconds if seconds > 0 else 0.0,
    }


def train_step(loop: Loop, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    """Augment, forward, backward, clip, step; returns the loss tensor (not read back)."""
    images = loop.augment(batch.images, generator)
    clinical = loop.clinical_dropout(batch.clinical, generator)
    with autocast(loop.cfg.amp, loop.runtime):
        logits = loop.model(images, clinical)
    loss = batch_loss(loop.loss_fn, logits.float(), batch)
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scaler.scale(loss).backward()
    loop.scaler.unscale_(loop.optimizer)
    torch.nn.utils.clip_grad_norm_(loop.net.parameters(), loop.cfg.grad_clip)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    return loss


def batch_loss(loss_fn: nn.Module, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The batch's loss, with its rows' weights when the split has them (pseudo-labelled
    rows); a split without weights calls `loss_fn(logits, labels)` as every loss accepts."""
    if batch.weights is None:
        return loss_fn(logits, batch.labels)
    return loss_fn(logits, batch.labels, batch.weights)


def validate(loop: Loop) -> dict[str, Any]:
    """Loss (on the device, from the logits) and metrics at 0.5 on the whole validation split."""
    logits = predict_logits(
        unwrap(loop.net), loop.val, loop.runtime, 2 * loop.cfg.batch_size, loop.cfg.amp
    )
    val_loss = float(loop.runtime.to_host(loop.loss_fn(logits, loop.val.labels)))
    host_logits = loop.runtime.to_host(logits)
    probs = loop.runtime.to_host(torch.sigmoid(logits))
    truth = loop.val.data.labels
    table = per_label_metrics(truth, probs, np.full(len(loop.labels), 0.5), loop.labels)
    summary = {
        "val_loss": val_loss,
        "val_macro_auroc": _nanmean(table["auroc"]),
        "val_macro_f1": _nanmean(table["f1_at_0.5"]),
    }
    for name, auroc, f1 in zip(loop.labels, table["auroc"], table["f1_at_0.5"], strict=True):
        summary[f"val_auroc_{name}"] = none_if_nan(auroc)
        summary[f"val_f1_{name}"] = none_if_nan(f1)
    return {"logits": host_logits, "probs": probs, "summary": summary}


def update_state(state: TrainState, record: dict[str, Any], net: nn.Module, monitor: str) -> None:
    """Early-stopping bookkeeping; the best weights are kept on the device (and in
    checkpoints)."""
    score = record[monitor]
    score = -score if monitor == "val_loss" else score
    score = -math.inf if score is None or math.isnan(score) else score
    state.history.append(record)
    if score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, record["epoch"], 0
        state.best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    else:
        state.bad_epochs += 1
    state.epoch += 1


def format_record(record: dict[str, Any]) -> str:
    keys = ("epoch", "train_loss", "val_loss", "val_macro_auroc", "val_macro_f1")
    text = "  ".join(
        f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
        for k in keys
        if k in record
    )
    seconds, speed = record.get("epoch_seconds", 0.0), record.get("images_per_second", 0.0)
    return f"{text}  seconds={seconds:.2f}  images/s={speed:.0f}"


def _nanmean(values: Any) -> float | None:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return None if np.isnan(arr).all() else float(np.nanmean(arr))
