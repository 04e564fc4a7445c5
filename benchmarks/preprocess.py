"""Preprocess throughput and peak memory on a 5,000-image OLIVES-like set.

Generates the raw set once with the synthetic source (504x496 PNGs in the hub schema), then
runs the preprocess core (`olives.data.cache.build_cache`) in a fresh child process, so its
peak resident memory is measured alone.

    python benchmarks/preprocess.py [--images 5000] [--size 224] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

from olives.config import PreprocessConfig, SyntheticSource
from olives.data import synthetic
from olives.data.cache import build_cache
from olives.data.schema import Columns

COLUMNS = Columns(
    "Image", ("B1", "B2", "B3", "B4", "B5", "B6"), ("BCVA", "CST"), "Patient_ID", "Eye_ID"
)


def make_raw(folder: Path, images: int) -> int:
    """About `images` train rows: 25-scan volumes, 2 visits, ~1.1 eyes per patient."""
    patients = max(1, round(images / 54))
    cfg = SyntheticSource(preset="default", patients=patients, test_patients=1)
    summary = synthetic.generate(cfg, folder, seed=0)
    return sum(s["rows"] for s in summary["splits"].values())


def child(raw: str, cfg: PreprocessConfig, queue: mp.Queue) -> None:
    queue.put(build_cache(Path(raw), cfg, COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, cache = Path(tmp) / "raw", Path(tmp) / "cache"
        start = time.perf_counter()
        rows = make_raw(raw, args.images)
        generated = time.perf_counter() - start
        raw_mb = sum(f.stat().st_size for f in raw.rglob("*.parquet")) / 2**20
        cfg = PreprocessConfig(
            height=args.size, width=args.size, num_workers=args.workers, cache_dir=str(cache)
        )
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=child, args=(str(raw), cfg, queue))
        start = time.perf_counter()
        proc.start()
        report = queue.get()
        proc.join()
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"raw set: {rows} images, {raw_mb:.0f} MB of parquet, generated in {generated:.1f} s "
        f"({rows / generated:.0f} images/s)"
    )
    print(f"preprocess to {args.size}x{args.size}, {args.workers} workers:")
    print(
        f"  decode+resize+write  {report['images_per_second']:8.1f} images/s "
        f"({report['seconds']:.1f} s)"
    )
    print(f"  whole child process  {rows / wall:8.1f} images/s ({wall:.1f} s, with imports)")
    print(f"  peak RSS             {peak_mb:8.0f} MB")
    print(json.dumps({k: report[k] for k in ("cached", "skipped_corrupt", "duplicate_rows")}))


if __name__ == "__main__":
    main()
