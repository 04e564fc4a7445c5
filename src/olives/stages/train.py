"""`train`: fit the model, write the model file and the training record, mirror them to MLflow.

Outputs: `train.model_dir/model.safetensors` (the `ModelBundle`) and `train.report_dir/`
(history, thresholds, validation metrics, learning curves, the result params). Local files
come first; MLflow gets copies, so a tracking failure loses nothing. With
`train.nproc_per_node > 1` the stage relaunches itself under torchrun (DDP); under torchrun
only rank 0 writes files and talks to MLflow.

Provenance tags (`git_commit`, `split_md5`, `cache_md5`) come from this stage's own tree
(`olives.tracking.provenance`), the experiment's copy in a queued run. A run resumed from a
checkpoint continues the MLflow run the checkpoint names, so a killed training ends as one
FINISHED run holding every epoch's metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from olives.config import ModelConfig, Params, flatten, select, to_dict
from olives.data.loader import SplitData, load_splits
from olives.data.prepare import INDEX as SPLIT_INDEX
from olives.data.prepare import SUMMARY, read_stats
from olives.errors import InputError
from olives.io import (
    PretrainFiles,
    TrainFiles,
    file_sha256,
    read_json,
    recorded_source,
    reset_dir,
    write_json,
)
from olives.models import ModelBundle, build_model
from olives.reporting.figures import learning_curves
from olives.runtime import Runtime, needs_launch, started, torchrun
from olives.tracking.provenance import dvc_hash, git_commit
from olives.tracking.runs import Tracker
from olives.training.checkpoint import FILE as CHECKPOINT_FILE
from olives.training.checkpoint import Checkpoint, fingerprint
from olives.training.distill import repeated, with_pseudo_rows
from olives.training.loop import TrainResult, fit
from olives.training.losses import build_loss, expected_initial_loss

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    "labels",
    "clinical",
    "model",
    "loss",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.weight_decay",
    "train.layer_decay",
    "train.freeze_backbone",
    "train.warmup_epochs",
    "train.min_lr_ratio",
    "train.grad_clip",
    "train.clinical_dropout",
    "train.patience",
    "train.monitor",
    "train.calibrate",
    "train.amp",
    "train.channels_last",
    "train.compile",
    "train.nproc_per_node",
    "train.augment",
)
HISTORY_TIMINGS = ("epoch_seconds", "images_per_second")  # to MLflow and the log, not DVC


def run(params: Params, pseudo: Path | None = None, rows: int | None = None) -> dict[str, Any]:
    """Train; with `pseudo` (a pseudo-label table, `training.distill`) its kept rows join the
    train split as soft targets of weight `paper.teacher.weight` (the teacher axis's student);
    with `rows`, the train split is cycled to that many rows per epoch (its same-steps
    control)."""
    if needs_launch(params.train.nproc_per_node):
        if pseudo is not None or rows is not None:
            raise InputError(
                "a student (pseudo-labelled rows) trains in one process: set "
                "train.nproc_per_node: 1"
            )
        torchrun(to_dict(params), "train", params.train.nproc_per_node)
        return read_json(TrainFiles(Path(params.train.report_dir)).metrics)
    runtime = Runtime.from_env()
    with started(runtime):
        return train(params, runtime, pseudo, rows)


def train(
    params: Params, runtime: Runtime, pseudo: Path | None = None, rows: int | None = None
) -> dict[str, Any]:
    cfg = params.train
    off = dataclasses.replace(params.tracking, enabled=False)
    tracker = Tracker(params.tracking if runtime.is_main else off)
    tracker.check()  # an unreachable server fails here, before any training
    data = load_splits(
        Path(params.preprocess.cache_dir),
        Path(params.split.out_dir),
        params.labels,
        params.clinical,
        names=("train", "val"),
    )
    prevalence = data["train"].labels.mean(axis=0)  # of the labelled rows
    if pseudo is not None:
        data["train"] = with_pseudo_rows(
            data["train"],
            pd.read_parquet(pseudo),
            params.labels,
            params.clinical,
            params.paper.teacher.weight,
        )
    if rows is not None:
        data["train"] = repeated(data["train"], rows)
    torch.manual_seed(params.seed)  # the initial weights of any layer not pretrained
    size = (int(data["train"].images.shape[1]), int(data["train"].images.shape[2]))
    model = build_model(model_config(params), len(params.labels), len(params.clinical), size)
    model.init_head_bias(prevalence)
    checkpoint = open_checkpoint(params, data, pseudo)
    # the check's expected loss is of hard labels: soft pseudo-labels would trip it
    check = cfg.check_initial_loss and pseudo is None
    expected = expected_initial_loss(params.loss, prevalence) if check else None
    resume = (
        tracker.resumable(checkpoint.saved_run_id()) if checkpoint and tracker.enabled else None
    )
    with tracker.run(run_name=run_name(params), run_id=resume, tags=run_tags(params)):
        if checkpoint is not None:  # a killed run is continued by the next attempt
            checkpoint = dataclasses.replace(checkpoint, run_id=tracker.run_id)
        tracker.log_params(flatten(params))
        result = fit(
            model,
            build_loss(params.loss, prevalence),
            data,
            cfg,
            seed=params.seed,
            labels=params.labels,
            runtime=runtime,
            checkpoint=checkpoint,
            expected_loss=expected,
            on_epoch=lambda record: tracker.log_metrics(record, step=record["epoch"]),
        )
        if not runtime.is_main:
            return {}
        log_missing_epochs(tracker, result.state.history)
        model_path = save_model(params, result, data["train"])
        summary = write_record(params, result)
        mirror(tracker, params, model_path)
    if checkpoint is not None:
        checkpoint.remove()
    log.info(
        "best epoch %s: val macro AUROC %s, macro F1 %s",
        summary["best_epoch"],
        summary["val_macro_auroc"],
        summary["val_macro_f1"],
    )
    return summary


def open_checkpoint(
    params: Params, data: dict[str, SplitData], pseudo: Path | None = None
) -> Checkpoint | None:
    """This run's checkpoint (None with `train.resume: false`): keyed by the result params,
    the rows and any pseudo-label table, so another run's file is never resumed."""
    if not params.train.resume:
        return None
    result = select(params, PARAMS)
    if pseudo is not None:
        result |= {"pseudo": file_sha256(pseudo), "weight": params.paper.teacher.weight}
    key = fingerprint(result, data["train"].rows, data["val"].rows)
    return Checkpoint(Path(params.train.checkpoint_dir) / CHECKPOINT_FILE, key)


def log_missing_epochs(tracker: Tracker, history: list[dict[str, Any]]) -> None:
    """Every epoch's metrics in the run, also those of a resumed checkpoint that the killed
    attempt had not logged (killed between checkpoint and log, or its run not continuable)."""
    if not tracker.enabled:
        return
    logged = tracker.logged_steps("epoch")
    for record in history:
        if record["epoch"] not in logged:
            tracker.log_metrics(record, step=record["epoch"])


def model_config(params: Params) -> ModelConfig:
    """`model.pretrained: pretrain` means the `pretrain` stage's encoder file."""
    if params.model.pretrained != "pretrain":
        return params.model
    files = PretrainFiles(Path(params.pretrain.out_dir))
    if not files.encoder.is_file():
        raise InputError(
            f"model.pretrained is 'pretrain' but {files.encoder} does not exist: set "
            "pretrain.epochs > 0 and run `olives stage pretrain` (dvc repro runs it before train)"
        )
    return dataclasses.replace(params.model, pretrained=f"file:{files.encoder}")


def run_name(params: Params) -> str:
    """`e<epochs>-s<seed>/<fusion>-<loss>[-linear]/<backbone>[-contrastive][/<dvc experiment>]`:
    what usually differs between runs first, so a truncated runs list still tells them apart
    (`-linear`: frozen backbone; `-contrastive`: from the pretrain stage's encoder)."""
    linear = "-linear" if params.train.freeze_backbone else ""
    start = "-contrastive" if params.model.pretrained == "pretrain" else ""
    name = (
        f"e{params.train.epochs}-s{params.seed}/{params.model.fusion}-{params.loss.name}{linear}"
        f"/{params.model.backbone}{start}"
    )
    experiment = os.environ.get("DVC_EXP_NAME")
    return f"{name}/{experiment}" if experiment else name


def run_tags(params: Params) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "data_source": recorded_source(params.data.report),
        "cache_md5": dvc_hash(params.preprocess.cache_dir),
        "split_md5": dvc_hash(f"{params.split.out_dir}/{SPLIT_INDEX}"),
        "backbone": params.model.backbone,
        "fusion": params.model.fusion,
        "loss": params.loss.name,
        "dvc_exp": os.environ.get("DVC_EXP_NAME"),
    }


def save_model(params: Params, result: TrainResult, train: SplitData) -> Path:
    bundle = ModelBundle(
        model=result.model,
        labels=params.labels,
        clinical=params.clinical,
        thresholds=tuple(float(t) for t in result.thresholds),
        temperatures=tuple(float(t) for t in result.temperatures),
        clinical_stats=read_stats(Path(params.split.out_dir))["clinical"],
        image_size=(int(train.images.shape[1]), int(train.images.shape[2])),
        resize=params.preprocess.resize,
        best_epoch=result.state.best_epoch,
        params={**select(params, PARAMS), "data.source": recorded_source(params.data.report)},
    )
    return bundle.save(reset_dir(params.train.model_dir))


def write_record(params: Params, result: TrainResult) -> dict[str, Any]:
    """History, thresholds, validation metrics, learning curves: deterministic files only."""
    files = TrainFiles(reset_dir(params.train.report_dir))
    history = pd.DataFrame(result.state.history).drop(columns=list(HISTORY_TIMINGS))
    history.to_csv(files.history, index=False)
    decisions = zip(params.labels, result.thresholds, result.temperatures, strict=True)
    write_json(
        files.thresholds,
        {name: {"threshold": float(t), "temperature": float(k)} for name, t, k in decisions},
    )
    result.val_table.to_csv(files.val_per_label)
    best = next(
        (h for h in result.state.history if h["epoch"] == result.state.best_epoch),
        result.state.history[-1],
    )
    metrics = {
        "best_epoch": result.state.best_epoch,
        "epochs_run": len(result.state.history),
        **{k: best.get(k) for k in ("val_loss", "val_macro_auroc", "val_macro_f1")},
    }
    write_json(files.metrics, metrics)
    write_json(files.params, select(params, PARAMS))
    learning_curves(result.state.history, files.learning_curves)
    return metrics


def mirror(tracker: Tracker, params: Params, model_path: Path) -> None:
    """Copies for MLflow (main process, tracking on): the record and the split summary. The
    model itself is logged and registered by the `track` stage (`olives.stages.track`)."""
    if not tracker.enabled:
        return
    files = TrainFiles(Path(params.train.report_dir))
    tracker.set_tags({"model_sha256": file_sha256(model_path)})
    best = summary_metrics(read_json(files.metrics))
    tracker.log_metrics(best)
    for path in (files.params, files.thresholds, files.val_per_label, files.history):
        tracker.log_artifact(path, "train")
    tracker.log_artifact(files.learning_curves, "train")
    tracker.log_artifact(Path(params.split.out_dir) / SUMMARY, "data")
    tracker.log_artifact(Path(params.data.report), "data")


def summary_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The training record under MLflow names: best_epoch, epochs_run, best_val_*."""
    return {k if k in ("best_epoch", "epochs_run") else f"best_{k}": v for k, v in record.items()}
