"""The `train` stage: fit, write every result locally (DVC outputs), then copy it to MLflow.

Outputs: `models/model.pt` (weights, thresholds, the description needed to rebuild the model,
train statistics), `reports/train/` (history, thresholds, validation metrics, learning curves,
resolved params) and `reports/train/mlflow_run.json` (the run that evaluate logs into).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from olives.config import Params, flatten, to_dict
from olives.loader import SplitData, load_splits
from olives.reporting.figures import learning_curves
from olives.tracking import Tracker, dvc_hash, git_commit
from olives.training import Runtime, TrainResult, fit

log = logging.getLogger(__name__)


def run_train(params: Params) -> dict[str, Any]:
    runtime = Runtime.from_env()
    cfg = params.train
    tracker = Tracker(params.tracking if runtime.is_main else type(params.tracking)(enabled=False))
    tracker.check()  # an unreachable server fails here, before any training
    data = load_splits(
        Path(params.preprocess.cache_dir),
        Path(params.split.out_dir),
        params.labels,
        params.clinical,
        names=("train", "val"),
    )
    stats = json.loads((Path(params.split.out_dir) / "stats.json").read_text())
    checkpoint = Path(cfg.checkpoint_dir) / "last.pt" if cfg.resume else None
    tags = {
        "git_commit": git_commit(),
        "data_source": params.data.source,
        "cache_md5": dvc_hash(params.preprocess.cache_dir),
        "split_md5": dvc_hash(f"{params.split.out_dir}/index.parquet"),
        "backbone": params.model.backbone,
        "fusion": params.model.fusion,
        "loss": params.loss.name,
    }
    with tracker.run(
        run_name=f"{params.model.fusion}-{params.loss.name}-s{params.seed}", tags=tags
    ):
        tracker.log_params(flatten(params))
        result = fit(
            params,
            data,
            runtime,
            checkpoint,
            on_epoch=lambda rec: tracker.log_metrics(rec, step=rec["epoch"]),
        )
        if not runtime.is_main:
            return {}
        summary = write_outputs(params, result, data, stats, tracker.run_id)
        log_to_mlflow(tracker, params, result, data)
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()  # the run finished: a later run must not resume from it
    return summary


def write_outputs(
    params: Params,
    result: TrainResult,
    data: dict[str, SplitData],
    stats: dict[str, Any],
    run_id: str | None,
) -> dict[str, Any]:
    """Local files first: a tracking failure can never lose them."""
    model_dir, report_dir = Path(params.train.model_dir), Path(params.train.report_dir)
    for folder in (model_dir, report_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    thresholds = {name: float(t) for name, t in zip(params.labels, result.thresholds, strict=True)}
    torch.save(
        {
            "state_dict": result.model.state_dict(),
            "description": result.model.describe(),
            "labels": list(params.labels),
            "clinical": list(params.clinical),
            "thresholds": thresholds,
            "stats": stats,
            "image_size": list(data["train"].images.shape[1:]),
            "params": to_dict(params),
            "best_epoch": result.state.best_epoch,
        },
        model_dir / "model.pt",
    )
    history = result.state.history
    pd.DataFrame(history).to_csv(report_dir / "history.csv", index=False)
    (report_dir / "thresholds.json").write_text(json.dumps(thresholds, indent=2) + "\n")
    per_label = result.val_metrics["per_label"]
    per_label.to_csv(report_dir / "val_per_label.csv")
    best = (
        next(h for h in history if h["epoch"] == result.state.best_epoch)
        if result.state.best_epoch >= 0
        else history[-1]
    )
    metrics = {
        "best_epoch": result.state.best_epoch,
        "epochs_run": len(history),
        **{k: best.get(k) for k in ("val_loss", "val_macro_auroc", "val_macro_f1")},
        "train_images_per_second": float(np.mean([h["images_per_second"] for h in history])),
    }
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (report_dir / "params.json").write_text(json.dumps(to_dict(params), indent=2) + "\n")
    (report_dir / "mlflow_run.json").write_text(json.dumps({"run_id": run_id}) + "\n")
    learning_curves(history, report_dir / "learning_curves.png")
    return metrics


def log_to_mlflow(
    tracker: Tracker, params: Params, result: TrainResult, data: dict[str, SplitData]
) -> None:
    report_dir = Path(params.train.report_dir)
    tracker.log_metrics(
        {f"best_{k}": v for k, v in json.loads((report_dir / "metrics.json").read_text()).items()}
    )
    for name in (
        "params.json",
        "thresholds.json",
        "val_per_label.csv",
        "history.csv",
        "learning_curves.png",
    ):
        tracker.log_artifact(report_dir / name, "train")
    tracker.log_artifact(Path(params.split.out_dir) / "splits.json", "data")
    tracker.log_artifact(Path("data/raw_report.json"), "data")
    if params.tracking.log_model:
        serving = ServingModel(result.model, data["train"].images.shape[1:]).eval()
        example = serving_example(data["val"])
        with torch.no_grad():
            output = serving(torch.from_numpy(example)).numpy()
        from mlflow.models import infer_signature

        tracker.log_model(
            serving, "model", signature=infer_signature(example, output), input_example=example
        )


class ServingModel(torch.nn.Module):
    """One flat float32 input per row, as MLflow's pytorch flavour serves it:
    the grey image in [0, 1] (H*W values, row-major), then the clinical features (standardised
    values, then missing flags). Output: one probability per biomarker."""

    def __init__(self, model: torch.nn.Module, image_shape: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.height, self.width = int(image_shape[0]), int(image_shape[1])

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        pixels = self.height * self.width
        images = flat[:, :pixels].reshape(-1, 1, self.height, self.width)
        return torch.sigmoid(self.model(images, flat[:, pixels:]))


def serving_example(data: SplitData, n: int = 2) -> np.ndarray:
    images = data.images[data.rows[:n]].astype(np.float32).reshape(n, -1) / 255.0
    return np.concatenate([images, data.clinical[:n]], axis=1).astype(np.float32)
