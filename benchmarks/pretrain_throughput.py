"""Contrastive pre-training throughput and memory per batch size (`olives.training.pretrain`).

Large batches matter for contrastive learning (more positives and negatives per anchor), so
this says what fits: for each batch size, one warm-up epoch and one timed epoch of `pretrain`
(two augmented views per scan, encoder + projection head, the clinical SupCon loss) over a
memory-mapped uint8 cache of random scans with random BCVA/CST codes, and, on a GPU, the peak
memory the epoch allocated. A batch that does not fit prints `out of memory` and the sweep
stops there.

Under `torchrun --nproc_per_node=W` each rank takes `batch` scans a step and the loss contrasts
the W * batch scans of the global batch (`contrastive.ContrastiveLoss`, gathered on the device
with no host sync); scans/s counts every rank's scans, rank 0 prints.

    python benchmarks/pretrain_throughput.py [--backbone tf_efficientnet_lite0] [--size 224]
        [--batches 128 256 512] [--steps 20] [--json out.json]
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

from olives.config import Params, from_dict
from olives.data.loader import SplitData
from olives.models.backbone import create_backbone
from olives.runtime import Runtime, started
from olives.stages.pretrain import loop_config
from olives.training.pretrain import Encoder, pretrain


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


def measure(args: argparse.Namespace, batch: int, runtime: Runtime, folder: Path) -> dict:
    """Scans per second (all ranks) of the second of two epochs, and the peak GPU memory (GiB)."""
    params = from_dict(
        Params,
        {
            "model": {"backbone": args.backbone, "pretrained": "none"},
            "pretrain": {"epochs": 2, "batch_size": batch, "warmup_epochs": 0.0},
            "train": {"progress": False},
        },
    )
    data = cache(folder, batch * args.steps * runtime.world_size, args.size)
    torch.manual_seed(0)
    backbone, data_config = create_backbone(args.backbone, "none", 0.0, (args.size, args.size))
    encoder = Encoder(backbone, data_config, params.pretrain.projection_dim)
    times: list[float] = []

    def tick(record: dict) -> None:
        runtime.synchronize()
        times.append(time.perf_counter())

    if runtime.cuda:
        torch.cuda.reset_peak_memory_stats()
    runtime.synchronize()
    times.append(time.perf_counter())
    result = pretrain(
        encoder,
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
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with started(Runtime.from_env()) as runtime:
        rows = sweep(args, runtime)
    if args.json and runtime.is_main:
        figures = {"backbone": args.backbone, "size": args.size, "runs": rows}
        args.json.write_text(json.dumps(figures))


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
