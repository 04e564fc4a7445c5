"""Contrastive pre-training throughput and memory per batch size (`olives.training.pretrain`).

Large batches matter for contrastive learning (more positives and negatives per anchor), so
this says what fits: for each batch size, one warm-up epoch and one timed epoch of `pretrain`
(two augmented views per scan, encoder + projection head, the clinical SupCon loss) over a
memory-mapped uint8 cache of random scans with random BCVA/CST codes, and, on a GPU, the peak
memory the epoch allocated. A batch that does not fit prints `out of memory` and the sweep
stops there.

`--compare` (one process) also measures the supervised loop (`train_throughput.full_loop`) at
the same images per step (2 x batch), prints the ratio of pre-training's views/s to it (the
target is >= 0.85), and splits one step of each into its parts (fetch from the cache, augment,
forward, loss, backward, clip + optimizer), in milliseconds with the device synchronised
between parts: where a gap between the two loops comes from.

Under `torchrun --nproc_per_node=W` each rank takes `batch` scans a step and the loss contrasts
the W * batch scans of the global batch (`contrastive.ContrastiveLoss`, gathered on the device
with no host sync); scans/s counts every rank's scans, rank 0 prints.

    python benchmarks/pretrain_throughput.py [--backbone tf_efficientnet_lite0] [--size 224]
        [--batches 128 256 512] [--steps 20] [--compare] [--json out.json]
    torchrun --standalone --nproc_per_node=2 benchmarks/pretrain_throughput.py --batches 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import train_throughput
from olives.config import Params, from_dict
from olives.data.loader import SplitData
from olives.models.backbone import create_backbone
from olives.models.inference import autocast
from olives.runtime import Runtime, started
from olives.stages.pretrain import loop_config
from olives.training.contrastive import ContrastiveLoss
from olives.training.loop import Loop, batch_loss, build_loop, configure_torch
from olives.training.pretrain import Encoder, TwoViews, pretrain

PHASES = ("fetch", "augment", "forward", "loss", "backward", "step")


def cache(folder: Path, n: int, size: int) -> SplitData:
    """`n` random uint8 scans (memory-mapped, as the preprocess stage writes them) with two
    clinical codes each (100 BCVA values, 20 CST bins)."""
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, size, size))
    images[:] = np.random.default_rng(0).integers(0, 255, images.shape, dtype=np.uint8)
    images.flush()
    rng = np.random.default_rng(1)
    codes = np.column_stack([rng.integers(0, 100, n), rng.integers(0, 20, n)])
    return SplitData(
        np.load(folder / "images.npy", mmap_mode="r"),
        np.arange(n),
        codes.astype(np.float32),
        np.zeros((n, 0), dtype=np.float32),
        pd.DataFrame(index=range(n)),
    )


def settings(args: argparse.Namespace, batch: int) -> Params:
    return from_dict(
        Params,
        {
            "model": {"backbone": args.backbone, "pretrained": "none"},
            "pretrain": {"epochs": 2, "batch_size": batch, "warmup_epochs": 0.0},
            "train": {"progress": False},
        },
    )


def encoder(args: argparse.Namespace, params: Params) -> Encoder:
    torch.manual_seed(0)
    backbone, data_config = create_backbone(args.backbone, "none", 0.0, (args.size, args.size))
    return Encoder(backbone, data_config, params.pretrain.projection_dim)


def measure(args: argparse.Namespace, batch: int, runtime: Runtime, folder: Path) -> dict:
    """Scans per second (all ranks) of the second of two epochs, and the peak GPU memory (GiB)."""
    params = settings(args, batch)
    data = cache(folder, batch * args.steps * runtime.world_size, args.size)
    model = encoder(args, params)
    times: list[float] = []

    def tick(record: dict) -> None:
        runtime.synchronize()
        times.append(time.perf_counter())

    if runtime.cuda:
        torch.cuda.reset_peak_memory_stats()
    runtime.synchronize()
    times.append(time.perf_counter())
    result = pretrain(
        model,
        data,
        loop_config(params),
        params.pretrain.temperature,
        seed=0,
        runtime=runtime,
        on_epoch=tick,
    )
    loss = result.state.history[-1]["train_loss"]
    assert np.isfinite(loss), loss
    peak = torch.cuda.max_memory_allocated() / 2**30 if runtime.cuda else float("nan")
    if not runtime.is_main:  # `pretrain` calls on_epoch on rank 0 only: rank 0 keeps time
        times += [float("nan")] * 2
    return {
        "batch": batch,
        "global_batch": batch * runtime.world_size,
        "scans_per_second": len(data) / (times[2] - times[1]),
        "first_epoch_seconds": times[1] - times[0],
        "peak_gib": peak,
        "loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also the supervised loop at 2 x batch images per step, the ratio, and each "
        "loop's step split into its parts (one process only)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with started(Runtime.from_env()) as runtime:
        rows = sweep(args, runtime)
        if args.compare and runtime.world_size == 1:
            for row in rows:
                row |= compare(args, row, runtime)
    if args.json and runtime.is_main:
        figures = {"backbone": args.backbone, "size": args.size, "runs": rows}
        args.json.write_text(json.dumps(figures))


def compare(args: argparse.Namespace, row: dict, runtime: Runtime) -> dict:
    """The supervised loop at the pre-training batch's views per step: its full-loop images/s
    (`train_throughput`), the views/s ratio, and both steps split into `PHASES`."""
    views = 2 * row["batch"]
    supervised_args = argparse.Namespace(
        backbone=args.backbone,
        batch=views,
        batches=args.steps,
        compile=False,
        cudnn_benchmark=False,
        device_cache="auto",
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = train_throughput.cache(Path(tmp), views * args.steps, args.size)
        supervised = train_throughput.full_loop(supervised_args, runtime, data)
        supervised_parts = phases(
            train_throughput.make_loop(supervised_args, runtime, data, augment=True), args.steps
        )
    with tempfile.TemporaryDirectory() as tmp:
        params = settings(args, row["batch"])
        cfg = loop_config(params)
        configure_torch(cfg, runtime)
        loss_fn = ContrastiveLoss(params.pretrain.temperature, runtime)
        data = {"train": cache(Path(tmp), row["batch"] * args.steps, args.size)}
        loop = build_loop(
            encoder(args, params), loss_fn, data, cfg, 0, (), runtime, augment=TwoViews(cfg.augment)
        )
        pretrain_parts = phases(loop, args.steps)
    ratio = 2 * row["scans_per_second"] / supervised
    print(
        f"batch {row['batch']}: pre-training {2 * row['scans_per_second']:.0f} views/s, "
        f"supervised at {views} images/step {supervised:.0f} images/s: ratio {ratio:.3f}"
    )
    print(f"{'ms per step':<14}" + "".join(f"{p:>10}" for p in (*PHASES, "total")))
    for name, parts in (("supervised", supervised_parts), ("pre-training", pretrain_parts)):
        cells = [parts[p] for p in PHASES] + [sum(parts.values())]
        print(f"{name:<14}" + "".join(f"{c:>10.1f}" for c in cells))
    return {
        "supervised_images_per_second": supervised,
        "views_ratio": ratio,
        "supervised_ms": supervised_parts,
        "pretrain_ms": pretrain_parts,
    }


def phases(loop: Loop, steps: int) -> dict[str, float]:
    """Milliseconds per step of each part of `training.loop.train_step` (with the batch
    fetched from the cache first), the device synchronised between parts; two warm-up steps."""
    runtime, cfg = loop.runtime, loop.cfg
    generator = runtime.generator(0)
    order = np.arange(len(loop.train))
    totals = dict.fromkeys(PHASES, 0.0)
    loop.net.train()
    for step in range(steps + 2):
        marks = [clock(runtime)]
        batch = next(loop.train.batches(np.roll(order, step * cfg.batch_size), cfg.batch_size))
        marks.append(clock(runtime))
        images = loop.augment(batch.images, generator)
        marks.append(clock(runtime))
        with autocast(cfg.amp, runtime):
            out = loop.model(images, batch.clinical)
        marks.append(clock(runtime))
        loss = batch_loss(loop.loss_fn, out.float(), batch)
        marks.append(clock(runtime))
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        marks.append(clock(runtime))
        loop.scaler.unscale_(loop.optimizer)
        torch.nn.utils.clip_grad_norm_(loop.net.parameters(), cfg.grad_clip)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        marks.append(clock(runtime))
        if step >= 2:
            for name, start, end in zip(PHASES, marks, marks[1:], strict=False):
                totals[name] += 1000 * (end - start) / steps
    return totals


def clock(runtime: Runtime) -> float:
    runtime.synchronize()
    return time.perf_counter()


def sweep(args: argparse.Namespace, runtime: Runtime) -> list[dict]:
    """`measure` each batch size in turn until one does not fit; rank 0 prints the table."""
    show = print if runtime.is_main else (lambda *_: None)
    rows: list[dict] = []
    show(f"{args.backbone}, {args.size} px, {runtime.device} x {runtime.world_size}, two views")
    show(f"{'batch':>6}{'global':>8}{'scans/s':>10}{'views/s':>10}{'peak GiB':>10}")
    for batch in args.batches:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = measure(args, batch, runtime, Path(tmp))
            except torch.OutOfMemoryError:
                show(f"{batch:>6}  out of memory")
                break
        rows.append(row)
        s = row["scans_per_second"]
        show(f"{batch:>6}{row['global_batch']:>8}{s:>10.0f}{2 * s:>10.0f}{row['peak_gib']:>10.2f}")
        if runtime.cuda:
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    main()
