"""Training throughput: (a) pure compute, (b) the full loop from the uint8 cache, (c) b / a.

(a) `olives.training.loop.train_step` (forward, backward, clip, AdamW step) on one batch that
    already sits on the device, augmentation off, repeated;
(b) `olives.training.loop.train_epoch` over a memory-mapped uint8 cache: batches to the device
    (or from the device cache), conversion, augmentation, the same step, scheduler, loss
    accounting;
(c) the loop's efficiency: 1.0 means the data path costs nothing.

Each side is also timed in CPU seconds of this process (`time.process_time`): on a shared
machine (other jobs on the same cores) wall time measures the neighbours, CPU time with
`--threads 1` still measures the work (more threads add spin-waiting to CPU time).

Both sides use the same model, optimizer, AMP and memory format, built by the training code
itself (`build_loop`), and each is timed with the device synchronised at both ends.

    python benchmarks/train_throughput.py [--backbone tf_efficientnet_lite0] [--size 224]
        [--batch 32] [--batches 16] [--device-cache auto] [--compile] [--threads 0]
        [--json out.json]
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

from olives.config import Params, TrainConfig, from_dict
from olives.data.loader import SplitData
from olives.models import build_model
from olives.runtime import Runtime
from olives.training.loop import Loop, build_loop, configure_torch, train_epoch, train_step
from olives.training.losses import build_loss

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def config(args: argparse.Namespace, augment: bool) -> tuple[Params, TrainConfig]:
    params = from_dict(
        Params,
        {
            "model": {"backbone": args.backbone, "pretrained": "none"},
            "train": {
                "batch_size": args.batch,
                "epochs": 100,
                "progress": False,
                "compile": args.compile,
                "cudnn_benchmark": args.cudnn_benchmark,
                "device_cache": {"auto": "auto", "true": True, "false": False}[args.device_cache],
                "augment": {"enabled": augment},
            },
        },
    )
    return params, params.train


def cache(folder: Path, n: int, size: int) -> SplitData:
    """A memory-mapped uint8 cache of `n` random scans, as the preprocess stage writes it."""
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, size, size))
    images[:] = np.random.default_rng(0).integers(0, 255, images.shape, dtype=np.uint8)
    images.flush()
    rng = np.random.default_rng(1)
    return SplitData(
        np.load(folder / "images.npy", mmap_mode="r"),
        np.arange(n),
        (rng.random((n, len(LABELS))) < 0.4).astype(np.float32),
        rng.standard_normal((n, 4)).astype(np.float32),
        pd.DataFrame(index=range(n)),
    )


def make_loop(args, runtime: Runtime, data: SplitData, augment: bool) -> Loop:
    params, cfg = config(args, augment)
    torch.manual_seed(0)
    model = build_model(params.model, len(LABELS), 2)
    loss_fn = build_loss(params.loss, np.full(len(LABELS), 0.4))
    configure_torch(cfg, runtime)
    return build_loop(model, loss_fn, {"train": data, "val": data}, cfg, 0, LABELS, runtime)


def pure_compute(args, runtime: Runtime, data: SplitData) -> tuple[float, float]:
    """Images per wall second and per CPU second of `train_step` on one resident batch."""
    loop = make_loop(args, runtime, data, augment=False)
    loop.model.train()
    batch = next(loop.train.batches(np.arange(args.batch), args.batch))  # now on the device
    generator = runtime.generator(0)
    for _ in range(3):
        train_step(loop, batch, generator)
    runtime.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        train_step(loop, batch, generator)
    runtime.synchronize()
    images = args.batch * args.batches
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu)


def full_loop(args, runtime: Runtime, data: SplitData) -> tuple[float, float]:
    """Images per wall second and per CPU second of `train_epoch` from the cache."""
    loop = make_loop(args, runtime, data, augment=True)
    train_epoch(loop, 0)  # warm-up: cudnn autotuning, compilation, first allocations
    runtime.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    stats = train_epoch(loop, 1)
    runtime.synchronize()
    seen = loop.steps_per_epoch * args.batch
    assert np.isfinite(stats["train_loss"])
    return seen / (time.perf_counter() - start), seen / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=16, help="timed steps per measurement")
    parser.add_argument("--device-cache", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="autotune convolutions")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="alternate (a) and (b) this often and keep the best of each, so a burst of "
        "load on a shared machine does not bias one side",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    runtime = Runtime.from_env()
    a = b = a_cpu = b_cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        data = cache(Path(tmp), args.batch * args.batches, args.size)
        for _ in range(args.repeat):
            wall, cpu = pure_compute(args, runtime, data)
            a, a_cpu = max(a, wall), max(a_cpu, cpu)
            wall, cpu = full_loop(args, runtime, data)
            b, b_cpu = max(b, wall), max(b_cpu, cpu)
    device = torch.cuda.get_device_name() if runtime.cuda else f"CPU x{torch.get_num_threads()}"
    print(f"{args.backbone}, batch {args.batch}, {args.size}x{args.size}, {device}")
    print("                          images/s   images/CPU-s")
    print(f"(a) pure compute        {a:8.1f}       {a_cpu:8.1f}")
    print(f"(b) full loop (cache)   {b:8.1f}       {b_cpu:8.1f}")
    print(f"(c) b / a               {b / a:8.3f}       {b_cpu / a_cpu:8.3f}")
    if args.json:
        figures = {"backbone": args.backbone, "batch": args.batch, "size": args.size}
        figures |= {"device": device, "pure": a, "full": b, "ratio": b / a}
        figures |= {"pure_cpu": a_cpu, "full_cpu": b_cpu, "ratio_cpu": b_cpu / a_cpu}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
