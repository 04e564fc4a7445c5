"""The training loop: batches from the cache, augmentation on whole batches, AdamW with warm-up
and cosine decay, early stopping on a validation metric, resumable checkpoints.

Determinism: every source of randomness in an epoch (shuffle order, augmentation, dropout) is
seeded from `(seed, epoch)`, and checkpoints are written at epoch boundaries, so a run resumed
from its last checkpoint ends with the same weights as an uninterrupted one (on CPU).
Rank-dependent work (progress bars, logging, checkpoints) goes through `Runtime.is_main` only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from olives.augment import BatchAugment
from olives.config import Params, to_dict
from olives.loader import SplitData, batches, epoch_order
from olives.losses import build_loss, expected_initial_loss
from olives.metrics import per_label_metrics, tune_thresholds
from olives.models import build_model

log = logging.getLogger(__name__)


class InitialLossError(RuntimeError):
    """The loss at initialisation is far from its expected value: a wiring bug."""


@dataclass(frozen=True)
class Runtime:
    """Where this process runs; the one place that knows about ranks."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @classmethod
    def from_env(cls) -> Runtime:
        """Read `torchrun`'s RANK/WORLD_SIZE/LOCAL_RANK; CUDA when available."""
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            device = torch.device("cpu")
        return cls(device, rank, world)


@dataclass
class TrainState:
    """Everything a checkpoint must hold to resume exactly."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None


@dataclass
class TrainResult:
    model: torch.nn.Module
    thresholds: np.ndarray
    state: TrainState
    val_metrics: dict[str, Any]


EpochHook = Callable[[dict[str, Any]], None]


def fit(
    params: Params,
    data: dict[str, SplitData],
    runtime: Runtime,
    checkpoint: Path | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train on `data['train']`, select on `data['val']`; resume from `checkpoint` if valid."""
    cfg = params.train
    configure_torch(params.seed, cfg.num_threads, runtime)
    prevalence = data["train"].labels.mean(axis=0)
    model = build_model(params.model, len(params.labels), len(params.clinical))
    model.init_head_bias(prevalence)
    model.to(runtime.device)
    if cfg.channels_last and runtime.cuda:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(params.loss, prevalence).to(runtime.device)
    steps_per_epoch = max(1, math.ceil(len(data["train"]) / (cfg.batch_size * runtime.world_size)))
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, params, steps_per_epoch)
    state = TrainState()
    fingerprint = run_fingerprint(params, data)
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, fingerprint, model, optimizer, scheduler)
    elif cfg.check_initial_loss:
        check_initial_loss(model, loss_fn, data["train"], params, prevalence, runtime)
    augment = BatchAugment(cfg.augment).to(runtime.device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16(cfg.amp, runtime))
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
        epoch = state.epoch
        train_stats = train_epoch(
            model,
            loss_fn,
            optimizer,
            scheduler,
            scaler,
            augment,
            data["train"],
            params,
            runtime,
            epoch,
            steps_per_epoch,
        )
        val = validate(model, loss_fn, data["val"], params, runtime)
        record = {"epoch": epoch, **train_stats, **val["summary"]}
        update_state(state, record, model, cfg.monitor)
        if runtime.is_main:
            log.info(format_record(record))
            if checkpoint is not None:
                save_checkpoint(checkpoint, fingerprint, model, optimizer, scheduler, state)
            if on_epoch is not None:
                on_epoch(record)
    model.load_state_dict(state.best_weights or model.state_dict())
    val = validate(model, loss_fn, data["val"], params, runtime)
    thresholds = tune_thresholds(data["val"].labels, val["probs"])
    val_table = per_label_metrics(data["val"].labels, val["probs"], thresholds, params.labels)
    return TrainResult(
        model, thresholds, state, {"summary": val["summary"], "per_label": val_table}
    )


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


def configure_torch(seed: int, num_threads: int, runtime: Runtime) -> None:
    torch.manual_seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if not runtime.cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)


def use_fp16(amp: bool, runtime: Runtime) -> bool:
    """fp16 needs a GradScaler; bf16 (Ampere and later) does not."""
    return amp and runtime.cuda and not torch.cuda.is_bf16_supported()


def autocast(amp: bool, runtime: Runtime) -> torch.autocast:
    dtype = torch.bfloat16 if runtime.cuda and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(runtime.device.type, dtype=dtype, enabled=amp and runtime.cuda)


def make_scheduler(
    optimizer: torch.optim.Optimizer, params: Params, steps_per_epoch: int
) -> CosineLRScheduler:
    """Linear warm-up then cosine decay, stepped per update (timm's scheduler)."""
    cfg = params.train
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


def run_fingerprint(params: Params, data: dict[str, SplitData]) -> str:
    """What a checkpoint must match to be resumed: every parameter and the training rows."""
    digest = hashlib.sha1(json.dumps(to_dict(params), sort_keys=True).encode())
    digest.update(data["train"].rows.tobytes())
    digest.update(data["val"].rows.tobytes())
    return digest.hexdigest()


def check_initial_loss(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    data: SplitData,
    params: Params,
    prevalence: np.ndarray,
    runtime: Runtime,
    max_batches: int = 4,
) -> float:
    """Karpathy's check: with the head bias at logit(prevalence), the first loss must be close
    to its analytic value; a large gap means a wiring bug (labels, normalisation, loss)."""
    expected = expected_initial_loss(params.loss, prevalence)
    model.eval()
    losses = []
    order = epoch_order(len(data), params.seed + 1, epoch=0, shuffle=True)
    size = params.train.batch_size
    with torch.no_grad():
        for batch in batches(data, size, order[: size * max_batches], prefetch=False):
            batch = batch.to(runtime.device)
            losses.append(float(loss_fn(model(batch.images, batch.clinical), batch.labels)))
    observed = float(np.mean(losses))
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


def train_epoch(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineLRScheduler,
    scaler: torch.amp.GradScaler,
    augment: BatchAugment,
    data: SplitData,
    params: Params,
    runtime: Runtime,
    epoch: int,
    steps_per_epoch: int,
) -> dict[str, float]:
    cfg = params.train
    model.train()
    epoch_seed = params.seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)  # dropout / drop-path
    generator = torch.Generator().manual_seed(epoch_seed)  # augmentation
    order = epoch_order(len(data), params.seed, epoch, True, runtime.rank, runtime.world_size)
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    bar = tqdm(
        total=steps_per_epoch,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not (cfg.progress and runtime.is_main),
    )
    for step, batch in enumerate(batches(data, cfg.batch_size, order, True, runtime.cuda)):
        batch = batch.to(runtime.device, cfg.channels_last and runtime.cuda)
        images = augment(batch.images, generator)
        with autocast(cfg.amp, runtime):
            loss = loss_fn(model(images, batch.clinical).float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step_update(epoch * steps_per_epoch + step + 1)
        total_loss += loss.item() * len(batch.positions)
        seen += len(batch.positions)
        bar.update(1)
        bar.set_postfix(
            loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}"
        )
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss / max(seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_second": seen / seconds if seconds > 0 else 0.0,
    }


@torch.no_grad()
def predict(
    model: torch.nn.Module, data: SplitData, batch_size: int, runtime: Runtime, amp: bool = True
) -> np.ndarray:
    """Sigmoid probabilities [N, L] in the split's row order."""
    model.eval()
    out = np.zeros((len(data), data.labels.shape[1]), dtype=np.float32)
    for batch in batches(data, batch_size * 2, np.arange(len(data)), prefetch=runtime.cuda):
        batch = batch.to(runtime.device)
        with autocast(amp, runtime):
            logits = model(batch.images, batch.clinical).float()
        out[batch.positions] = torch.sigmoid(logits).cpu().numpy()
    return out


def validate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    data: SplitData,
    params: Params,
    runtime: Runtime,
) -> dict[str, Any]:
    probs = predict(model, data, params.train.batch_size, runtime, params.train.amp)
    eps = 1e-6
    logits = torch.logit(torch.from_numpy(probs).clamp(eps, 1 - eps))
    val_loss = float(loss_fn(logits, torch.from_numpy(data.labels)))
    table = per_label_metrics(data.labels, probs, np.full(len(params.labels), 0.5), params.labels)
    summary = {
        "val_loss": val_loss,
        "val_macro_auroc": _nanmean(table["auroc"]),
        "val_macro_f1": _nanmean(table["f1_at_0.5"]),
    }
    for name, auroc, f1 in zip(params.labels, table["auroc"], table["f1_at_0.5"], strict=True):
        summary[f"val_auroc_{name}"] = _none_if_nan(auroc)
        summary[f"val_f1_{name}"] = _none_if_nan(f1)
    return {"probs": probs, "summary": summary}


def update_state(
    state: TrainState, record: dict[str, Any], model: torch.nn.Module, monitor: str
) -> None:
    """Early-stopping bookkeeping; the best weights are kept in memory (and checkpoints)."""
    score = record[monitor]
    score = -score if monitor == "val_loss" else score
    score = -math.inf if score is None or math.isnan(score) else score
    state.history.append(record)
    if score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, record["epoch"], 0
        state.best_weights = copy.deepcopy(
            {k: v.detach().cpu() for k, v in model.state_dict().items()}
        )
    else:
        state.bad_epochs += 1
    state.epoch += 1


def format_record(record: dict[str, Any]) -> str:
    keys = (
        "epoch",
        "train_loss",
        "val_loss",
        "val_macro_auroc",
        "val_macro_f1",
        "images_per_second",
    )
    return "  ".join(
        f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
        for k in keys
        if k in record
    )


def _nanmean(values: Any) -> float | None:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return None if np.isnan(arr).all() else float(np.nanmean(arr))


def _none_if_nan(value: Any) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineLRScheduler,
    state: TrainState,
) -> None:
    """Atomic write (tmp + rename): an interruption never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state.__dict__,
        },
        tmp,
    )
    tmp.replace(path)


def load_checkpoint(
    path: Path,
    fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineLRScheduler,
) -> TrainState:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["fingerprint"] != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to other params or data", path)
        return TrainState()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state = TrainState(**saved["state"])
    log.info("resumed from %s after epoch %d", path, state.epoch - 1)
    return state
