"""The whole DVC pipeline, download → report, on the tiny synthetic preset in a scratch copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {
        "synthetic": {
            "preset": "tiny",
            "patients": 8,
            "test_patients": 3,
            "width": 128,
            "height": 124,
            "num_workers": 1,
        }
    },
    "preprocess": {"height": 48, "width": 48},
    "split": {"candidates": 4},
    "train": {"epochs": 1, "batch_size": 16, "progress": False},
    "evaluate": {"bootstrap": 50},
    "report": {"gallery_size": 2},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "src"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_dvc_repro_runs_every_stage(project: Path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow.db",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    result = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    raw = json.loads((project / "data/raw_report.json").read_text())
    assert raw["source"] == "synthetic" and set(raw["splits"]) == {"train", "test"}
    splits = json.loads((project / "data/split/splits.json").read_text())
    patients = [set(part["patients"]) for part in splits["splits"].values()]
    assert sum(map(len, patients)) == len(set().union(*patients))  # no patient in two splits
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["n_images"] == raw["splits"]["test"]["labelled_rows"]
    report = (project / "reports/report.md").read_text()
    assert "## 2. Results per B-scan" in report and "Not comparable" in report
    assert "## 3. Results per volume" in report and "test volumes (patient x eye x visit)" in report
    assert (project / "models/model.safetensors").is_file()
    assert (project / "reports/plots/roc").is_dir()
    summary = json.loads((project / "reports/summary.json").read_text())
    assert summary["test_auroc"] == metrics["macro"]["auroc"]
    assert summary["vip2"] == metrics["vip_phase2"]

    # olives predict on the raw test shards gives evaluate's numbers: same decoding, resizing,
    # clinical statistics, calibration and thresholds.
    command = [sys.executable, "-m", "olives", "predict", "data/raw/test", "--out", "again.csv"]
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    again = pd.read_csv(project / "again.csv").set_index("source")
    evaluated = pd.read_csv(project / "reports/predictions.csv").set_index("path")
    probs = [f"{name}_prob" for name in metrics["labels"]]
    assert len(again) == len(evaluated)
    np.testing.assert_allclose(again.loc[evaluated.index, probs], evaluated[probs], atol=2e-6)

    status = subprocess.run(
        [*dvc, "status"], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    assert "up to date" in status.stdout.lower()  # dvc.lock covers every stage
