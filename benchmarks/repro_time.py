"""The first run's time, stage by stage: `dvc repro -f dvc.yaml` of the default pipeline in a
fresh clone of this checkout's HEAD, with each stage's wall seconds, the total, the machine's
load before and after, and the test macro AUROC it reached (issue 27: under 3 minutes on 2
idle cores, AUROC >= 0.90).

    python benchmarks/repro_time.py            # a clone in a temporary folder, removed after
    python benchmarks/repro_time.py --keep DIR # keep the clone (its mlflow.db, data, models)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^Running stage '([\w@-]+)'")


def timed_repro(clone: Path) -> tuple[list[tuple[str, float]], float]:
    """(stage, seconds) in the order DVC ran them, and the total wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(clone / "src"), "MPLBACKEND": "Agg"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store, as a newcomer's
    command = [sys.executable, "-m", "dvc", "repro", "-f", "dvc.yaml"]
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    with subprocess.Popen(
        command, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if match := STAGE.match(line):
                marks.append((match.group(1), time.perf_counter()))
    total = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"dvc repro failed with code {process.returncode}")
    ends = [t for _, t in marks[1:]] + [start + total]
    return [(name, end - t) for (name, t), end in zip(marks, ends, strict=True)], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="olives-repro-"))
    clone = folder / "olives"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    load = os.getloadavg()[0]
    try:
        stages, total = timed_repro(clone)
        summary = json.loads((clone / "reports/summary.json").read_text())
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'stage':<12} {'seconds':>8}")
    for name, seconds in stages:
        print(f"{name:<12} {seconds:8.1f}")
    print(f"{'total':<12} {total:8.1f}")
    print(f"load average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"test macro AUROC {summary['test_auroc']:.4f}, F1 {summary['test_f1']:.4f}")


if __name__ == "__main__":
    main()
