"""Synthetic OLIVES generator: images/s and label statistics against the real data.

Times `generate` end to end (rendering + PNG encoding + parquet writing, one process) on the
`default` preset, then compares the `full` preset's labels (no pixels) with the real OLIVES
training labels and the VIP Cup RECOVERY test set.

    python benchmarks/synthetic.py [--preset default] [--patients N] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from olives.config import SyntheticSource
from olives.data import synthetic
from olives.data.schema import BIOMARKERS

TRAIN_PREVALENCE = (0.674, 0.317, 0.555, 0.301, 0.319, 0.435)
TEST_PREVALENCE = (0.311, 0.315, 0.519, 0.180, 0.037, 0.110)
CORRELATIONS = {
    ("B2", "B3"): -0.76,
    ("B5", "B6"): 0.71,
    ("B1", "B5"): 0.36,
    ("B1", "B6"): 0.41,
    ("BCVA", "CST"): -0.54,
    ("BCVA", "B5"): -0.43,
    ("BCVA", "B6"): -0.40,
    ("BCVA", "B1"): -0.20,
    ("CST", "B5"): 0.53,
    ("CST", "B6"): 0.44,
    ("CST", "B1"): 0.23,
    ("B4", "B1"): -0.01,
    ("B4", "B6"): -0.09,
}


def throughput(cfg: SyntheticSource, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = synthetic.generate(cfg, Path(tmp), seed=seed)
        seconds = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.parquet")) / 2**20
    sizes = summary["sizes"]
    print(
        f"preset {cfg.preset}: {summary['rows']} images of {sizes['width']}x{sizes['height']} "
        f"in {seconds:.1f} s -> {summary['rows'] / seconds:.1f} images/s "
        f"(render + PNG + parquet, one process); {size_mb / summary['rows'] * 1024:.0f} KB "
        f"per image"
    )
    for split, part in summary["splits"].items():
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
    for k, name in enumerate(BIOMARKERS):
        print(
            f"{name:4}{TRAIN_PREVALENCE[k]:>14.3f}{train[name].mean():>11.3f}"
            f"{TEST_PREVALENCE[k]:>13.3f}{test[name].mean():>11.3f}"
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = SyntheticSource(preset=args.preset, patients=args.patients)
    throughput(cfg, args.seed)
    render_only(cfg, args.seed)
    label_statistics(args.seed, args.label_patients)


if __name__ == "__main__":
    main()
