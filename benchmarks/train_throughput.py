"""Training throughput: (a) pure compute, (b) the full loop from the uint8 cache, (c) b / a.

(a) forward + backward + AdamW step on one in-memory batch, repeated;
(b) `olives.training.train_epoch` on a memory-mapped cache: gather, augmentation, the same
    model step, scheduler, progress accounting;
(c) the loop's efficiency: 1.0 means the data path costs nothing.

    python benchmarks/train_throughput.py [--size 224] [--batch 32] [--batches 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from olives.augment import BatchAugment
from olives.config import Params, from_dict
from olives.loader import SplitData
from olives.losses import build_loss
from olives.models import build_model
from olives.training import Runtime, make_scheduler, train_epoch, use_fp16


def setup(args: argparse.Namespace, runtime: Runtime):
    params = from_dict(
        Params,
        {
            "train": {"batch_size": args.batch, "progress": False, "epochs": 1},
            "model": {"backbone": args.backbone},
        },
    )
    model = build_model(params.model, 6, 2).to(runtime.device)
    if runtime.cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = build_loss(params.loss, np.full(6, 0.4)).to(runtime.device)
    return params, model, optimizer, loss_fn


def pure_compute(args, runtime: Runtime) -> float:
    _, model, optimizer, loss_fn = setup(args, runtime)
    fmt = torch.channels_last if runtime.cuda else torch.contiguous_format
    images = torch.rand(args.batch, 1, args.size, args.size, device=runtime.device)
    images = images.contiguous(memory_format=fmt)
    clinical = torch.randn(args.batch, 4, device=runtime.device)
    labels = (torch.rand(args.batch, 6, device=runtime.device) < 0.4).float()
    model.train()

    def step() -> None:
        dtype = torch.bfloat16 if runtime.cuda else torch.float32
        with torch.autocast(runtime.device.type, dtype=dtype, enabled=runtime.cuda):
            loss = loss_fn(model(images, clinical).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):
        step()
    sync(runtime)
    start = time.perf_counter()
    for _ in range(args.batches):
        step()
    sync(runtime)
    return args.batch * args.batches / (time.perf_counter() - start)


def full_loop(args, runtime: Runtime, folder: Path) -> float:
    params, model, optimizer, loss_fn = setup(args, runtime)
    n = args.batch * (args.batches + 2)
    images = np.lib.format.open_memmap(
        folder / "images.npy", "w+", np.uint8, (n, args.size, args.size)
    )
    images[:] = np.random.default_rng(0).integers(0, 255, images.shape, dtype=np.uint8)
    images.flush()
    cache = np.load(folder / "images.npy", mmap_mode="r")
    data = SplitData(
        cache,
        np.arange(n),
        (np.random.rand(n, 6) < 0.4).astype(np.float32),
        np.random.randn(n, 4).astype(np.float32),
        pd.DataFrame(index=range(n)),
    )
    warm = SplitData(
        cache,
        np.arange(2 * args.batch),
        data.labels[: 2 * args.batch],
        data.clinical[: 2 * args.batch],
        data.frame.iloc[: 2 * args.batch],
    )
    scheduler = make_scheduler(optimizer, params, n // args.batch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16(True, runtime))
    augment = BatchAugment(params.train.augment).to(runtime.device)
    common = (model, loss_fn, optimizer, scheduler, scaler, augment)
    train_epoch(*common, warm, params, runtime, 0, n // args.batch)
    sync(runtime)
    start = time.perf_counter()
    stats = train_epoch(*common, data, params, runtime, 1, n // args.batch)
    sync(runtime)
    elapsed = time.perf_counter() - start
    return stats["images_per_second"] if not runtime.cuda else len(data) / elapsed


def sync(runtime: Runtime) -> None:
    if runtime.cuda:
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="alternate (a) and (b) this often; report the best of each, so "
        "a burst of load on a shared machine does not bias one side",
    )
    args = parser.parse_args()
    runtime = Runtime.from_env()
    torch.manual_seed(0)
    a, b = 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            a = max(a, pure_compute(args, runtime))
            b = max(b, full_loop(args, runtime, Path(tmp)))
    device = torch.cuda.get_device_name() if runtime.cuda else f"CPU x{torch.get_num_threads()}"
    print(f"{args.backbone}, batch {args.batch}, {args.size}x{args.size}, {device}")
    print(f"(a) pure compute        {a:8.1f} images/s")
    print(f"(b) full loop (cache)   {b:8.1f} images/s")
    print(f"(c) b / a               {b / a:8.3f}")


if __name__ == "__main__":
    main()
