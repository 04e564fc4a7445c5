"""DDP on the CPU: the train stage launches torchrun (gloo, 2 processes) on the tiny preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from olives.config import load_params
from olives.data.loader import BatchSource, load_splits
from olives.evaluation.metrics import per_label_metrics
from olives.io import TrainFiles, read_json
from olives.models import ModelBundle
from olives.models.inference import predict_logits
from olives.runtime import Runtime
from olives.training.losses import build_loss
from test_pipeline import REPO, TINY, merge

CPU = Runtime(torch.device("cpu"))


def olives(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "olives", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    train = {**TINY["train"], "epochs": 2, "nproc_per_node": 2}
    params = merge(
        yaml.safe_load((REPO / "params.yaml").read_text()),
        {**TINY, "train": train, "tracking": {"enabled": False}},
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "preprocess", "split"):
        result = olives(root, "stage", stage)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_train_stage_runs_under_torchrun_with_two_processes(project):
    result = olives(project, "stage", "train")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "nproc_per_node=2" in result.stderr  # the stage launched torchrun itself
    assert sorted(p.name for p in (project / "models").iterdir()) == ["model.safetensors"]

    # The validation metrics written by the DDP run (predictions all-gathered from both ranks)
    # equal a single-process evaluation of the saved weights on the whole validation split.
    params = load_params(project / "params.yaml")
    bundle = ModelBundle.load(project / "models")
    val = load_splits(
        project / "data/cache", project / "data/split", bundle.labels, bundle.clinical, ("val",)
    )["val"]
    source = BatchSource(val, CPU)
    logits = predict_logits(bundle.model, source, CPU, 2 * params.train.batch_size, amp=False)
    probs = torch.sigmoid(logits).numpy()
    table = per_label_metrics(val.labels, probs, np.full(len(bundle.labels), 0.5), bundle.labels)
    written = read_json(TrainFiles(project / "reports/train").metrics)
    prevalence = read_json(project / "data/split/stats.json")["prevalence"]
    loss_fn = build_loss(params.loss, [prevalence[name] for name in bundle.labels])
    assert written["val_macro_auroc"] == pytest.approx(np.nanmean(table["auroc"]), abs=1e-6)
    assert written["val_macro_f1"] == pytest.approx(np.nanmean(table["f1_at_0.5"]), abs=1e-6)
    assert written["val_loss"] == pytest.approx(float(loss_fn(logits, source.labels)), rel=1e-5)


def test_pretrain_stage_runs_under_torchrun_with_two_processes(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pretrain"] = {**params["pretrain"], "epochs": 2, "batch_size": 4}
    (project / "pretrain.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = olives(project, "--params", "pretrain.yaml", "stage", "pretrain")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "nproc_per_node=2" in result.stderr  # the stage launched torchrun itself
    assert sorted(p.name for p in (project / "pretrain").iterdir()) == [
        "encoder.safetensors",
        "history.csv",
        "pretrain.json",
    ]
    summary = read_json(project / "pretrain/pretrain.json")  # written once, by rank 0
    assert summary["enabled"] and summary["epochs"] == 2
    assert np.isfinite(summary["final_loss"])
