"""OLIVES-size data: the pipeline's stages on the synthetic `full` preset (13.1k scans, 9.4k
labelled training scans), each stage timed as its own process, with its peak memory.

Prints, per stage: wall seconds and peak RSS (the largest process of the stage, workers
included); then, per training epoch, seconds and images/s as the train stage logged them.

    python benchmarks/olives_scale.py [--preset full] [--size 224] [--batch 128] [--epochs 2]
        [--workdir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("download", "preprocess", "split", "train")
EPOCH_LINE = re.compile(r"epoch=(\d+) .*seconds=([\d.]+)\s+images/s=(\d+)")


def write_params(folder: Path, args: argparse.Namespace) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"]["preset"] = args.preset
    params["preprocess"].update(height=args.size, width=args.size)
    params["train"].update(epochs=args.epochs, batch_size=args.batch, progress=False, patience=99)
    params["tracking"]["enabled"] = False
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage(folder: Path, stage: str) -> dict:
    """One stage as `python -m olives stage <stage>`: wall time and the child's peak RSS (wait4)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(folder / f"{stage}.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "olives", "stage", stage],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=log,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    text = (folder / f"{stage}.log").read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{stage} failed:\n{text[-3000:]}")
    return {"stage": stage, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "log": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        write_params(folder, args)
        results = [run_stage(folder, stage) for stage in STAGES]
    epochs = [
        {"epoch": int(e), "seconds": float(s), "images_per_second": float(i)}
        for e, s, i in EPOCH_LINE.findall(results[-1]["log"])
    ]
    print(f"synthetic '{args.preset}' at {args.size}x{args.size}, batch {args.batch}")
    print(f"{'stage':<12}{'seconds':>10}{'peak RSS MB':>14}")
    for r in results:
        print(f"{r['stage']:<12}{r['seconds']:>10.1f}{r['peak_rss_mb']:>14.0f}")
    for e in epochs:
        speed = e["images_per_second"]
        print(f"train epoch {e['epoch']}: {e['seconds']:.2f} s, {speed:.0f} images/s")
    if args.json:
        stages = [{k: v for k, v in r.items() if k != "log"} for r in results]
        args.json.write_text(json.dumps({"stages": stages, "epochs": epochs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
