"""Synthetic OLIVES generator: images/s and label statistics against the real data.

Times `generate` end to end (rendering + PNG encoding in worker processes, parquet writing in
the parent) on the `default` preset, once per worker count (default: 1, i.e. in-process, and
0, i.e. every core) and checks that the files are byte-identical across counts; then compares
the `full` preset's labels (no pixels) with the real OLIVES training labels and the VIP Cup
RECOVERY test set.

    python benchmarks/synthetic.py [--preset default] [--patients N] [--workers 1 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from olives.config import BIOMARKERS, SyntheticSource
from olives.data import synthetic

TRAIN_PREVALENCE = synthetic.REAL_TRAIN_PREVALENCE
TEST_PREVALENCE = synthetic.RECOVERY_PREVALENCE
CORRELATIONS = {**synthetic.REAL_CORRELATIONS, ("B4", "B1"): -0.01, ("B4", "B6"): -0.09}


def throughput(cfg: SyntheticSource, seed: int) -> tuple[float, str, dict[str, Any]]:
    """One timed `generate` run: images/s, a digest of every file written, and the summary."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = synthetic.generate(cfg, Path(tmp), seed=seed)
        seconds = time.perf_counter() - start
        files = sorted(Path(tmp).rglob("*.parquet"))
        size_kb = sum(f.stat().st_size for f in files) / 1024
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(tmp)).encode() + f.read_bytes())
    rate = summary["rows"] / seconds
    sizes = summary["sizes"]
    print(
        f"preset {cfg.preset}, {summary['workers']} worker(s): {summary['rows']} images of "
        f"{sizes['width']}x{sizes['height']} in {seconds:.1f} s -> {rate:.1f} images/s "
        f"(render + PNG + parquet); {size_kb / summary['rows']:.0f} KB per image"
    )
    return rate, digest.hexdigest(), summary


def scaling(cfg: SyntheticSource, seed: int, worker_counts: list[int]) -> None:
    """Throughput per worker count (0: every core); the files must not depend on it."""
    runs = [throughput(dataclasses.replace(cfg, num_workers=n), seed) for n in worker_counts]
    base = runs[0][0]
    speedups = ", ".join(f"{s['workers']}: {rate / base:.2f}x" for rate, _, s in runs)
    same = len({digest for _, digest, _ in runs}) == 1
    print(f"  speed-up by workers: {speedups}; files byte-identical across counts: {same}")
    for split, part in runs[-1][2]["splits"].items():
        print(
            f"  {split}: {part['rows']} rows, {part['patients']} patients, "
            f"{part['volumes']} volumes"
        )


def render_only(cfg: SyntheticSource, seed: int, images: int = 200) -> None:
    """Split the time between rendering and PNG encoding."""
    sizes = synthetic.resolve_preset(cfg)
    render = encode = 0.0
    it = synthetic.iter_images(sizes, seed, "train")
    for _ in range(images):
        start = time.perf_counter()
        _, _, img = next(it)
        mid = time.perf_counter()
        synthetic.encode_png(img)
        render += mid - start
        encode += time.perf_counter() - mid
    print(f"  per image: render {render / images * 1e3:.2f} ms, PNG {encode / images * 1e3:.2f} ms")


def label_statistics(seed: int, patients: int | None) -> None:
    cfg = SyntheticSource(preset="full", patients=patients)
    train = synthetic.label_table(cfg, seed, "train")
    test = synthetic.label_table(cfg, seed, "test")
    print(
        f"\nfull preset labels (seed {seed}): train {len(train)} rows, "
        f"{train['Patient_ID'].nunique()} patients, {train['Eye_ID'].nunique()} eyes; "
        f"test {len(test)} rows, {test['Patient_ID'].nunique()} patients"
    )
    print(f"{'':4}{'train target':>14}{'generated':>11}{'test target':>13}{'generated':>11}")
    for name in BIOMARKERS:
        print(
            f"{name:4}{TRAIN_PREVALENCE[name]:>14.3f}{train[name].mean():>11.3f}"
            f"{TEST_PREVALENCE[name]:>13.3f}{test[name].mean():>11.3f}"
        )
    corr = train[[*BIOMARKERS, "BCVA", "CST"]].corr()
    print("\ncorrelation (train)   target  generated")
    for (a, b), target in CORRELATIONS.items():
        print(f"  {a:>4} - {b:<4}       {target:+.2f}      {corr.loc[a, b]:+.2f}")
    for name, mean, sd in (("BCVA", 77.7, 10.9), ("CST", 335, 118)):
        col = train[name]
        print(
            f"{name}: mean {col.mean():.1f} (real {mean}), sd {col.std():.1f} (real {sd}), "
            f"range {col.min():.0f}-{col.max():.0f}, missing {col.isna().mean():.2%}"
        )
    adjacent = train.sort_values(["Eye_ID", "visit", "scan"])
    labels = adjacent[list(BIOMARKERS)].to_numpy()
    same = adjacent["scan"].to_numpy()[1:] > 0
    print(
        f"neighbouring scans with identical labels: "
        f"{np.mean((labels[1:] == labels[:-1]).all(axis=1)[same]):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=list(synthetic.PRESETS))
    parser.add_argument(
        "--patients",
        type=int,
        default=None,
        help="train patients for the timing run (default: the preset's)",
    )
    parser.add_argument(
        "--label-patients",
        type=int,
        default=None,
        help="train patients for the label statistics (default: 87)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="worker counts to time (0: every core; default: 1 0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = SyntheticSource(preset=args.preset, patients=args.patients)
    scaling(cfg, args.seed, args.workers)
    render_only(cfg, args.seed)
    label_statistics(args.seed, args.label_patients)


if __name__ == "__main__":
    main()
