"""`pretrain`: clinically supervised contrastive pre-training of `model.backbone` on the train
patients' labelled and unlabelled scans (`olives.training.pretrain`).

Off by default (`pretrain.epochs: 0`): the stage then writes only `pretrain.json` saying so,
and `model.pretrained: pretrain` is refused. Otherwise it writes `pretrain.out_dir/`:
`encoder.safetensors` (the backbone's weights, no projection head, with the backbone name and
image size as metadata), `history.csv` and `pretrain.json`. The train stage starts from the
encoder when `model.pretrained` is `pretrain`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from olives.config import Params, TrainConfig, flatten, select, to_dict
from olives.data.cache import open_cache
from olives.data.prepare import pretraining_rows, read_index
from olives.io import PretrainFiles, read_json, reset_dir, write_json
from olives.models.backbone import create_backbone
from olives.runtime import Runtime, needs_launch, started, torchrun
from olives.tracking.runs import Tracker
from olives.training.checkpoint import FILE as CHECKPOINT_FILE
from olives.training.checkpoint import Checkpoint, fingerprint
from olives.training.contrastive import positive_codes
from olives.training.pretrain import Encoder, codes_as_split, pretrain

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    "patient_column",
    "model.backbone",
    "model.pretrained",
    "model.drop_path",
    "pretrain.epochs",
    "pretrain.batch_size",
    "pretrain.lr",
    "pretrain.weight_decay",
    "pretrain.warmup_epochs",
    "pretrain.temperature",
    "pretrain.positives",
    "pretrain.cst_bin",
    "pretrain.projection_dim",
    "train.augment",
    "train.grad_clip",
    "train.min_lr_ratio",
    "train.amp",
    "train.nproc_per_node",
)


def run(params: Params) -> dict[str, Any]:
    files = PretrainFiles(reset_dir(params.pretrain.out_dir))
    if params.pretrain.epochs == 0:
        summary = {"enabled": False, "reason": "pretrain.epochs is 0"}
        write_json(files.summary, summary)
        return summary
    if needs_launch(
        params.train.nproc_per_node
    ):  # train.nproc_per_node > 1: DDP, one process per device
        torchrun(to_dict(params), "pretrain", params.train.nproc_per_node)
        return read_json(files.summary)
    runtime = Runtime.from_env()
    with started(runtime):
        return run_pretraining(params, runtime, files)


def loop_config(params: Params) -> TrainConfig:
    """The train stage's loop settings with the pre-training schedule."""
    p = params.pretrain
    return dataclasses.replace(
        params.train,
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        weight_decay=p.weight_decay,
        layer_decay=None,
        freeze_backbone=False,
        warmup_epochs=p.warmup_epochs,
        compile=False,
    )


def run_pretraining(params: Params, runtime: Runtime, files: PretrainFiles) -> dict[str, Any]:
    images, _ = open_cache(Path(params.preprocess.cache_dir))
    frame = pretraining_rows(read_index(Path(params.split.out_dir)), params.patient_column)
    codes = positive_codes(
        frame, params.pretrain.positives, params.patient_column, params.pretrain.cst_bin
    )
    data = codes_as_split(images, frame, codes)
    size = (int(images.shape[1]), int(images.shape[2]))
    start = "none" if params.model.pretrained == "pretrain" else params.model.pretrained
    torch.manual_seed(params.seed)
    backbone, data_config = create_backbone(
        params.model.backbone, start, params.model.drop_path, size
    )
    encoder = Encoder(backbone, data_config, params.pretrain.projection_dim)
    key = fingerprint(select(params, PARAMS), data.rows)
    checkpoint = Checkpoint(Path(params.pretrain.checkpoint_dir) / CHECKPOINT_FILE, key)
    tracker = Tracker(params.tracking if runtime.is_main else _off(params))
    name = f"pretrain/{params.model.backbone}-{'+'.join(params.pretrain.positives)}"
    with tracker.run(run_name=f"{name}-e{params.pretrain.epochs}-s{params.seed}"):
        tracker.log_params(flatten(params))
        result = pretrain(
            encoder,
            data,
            loop_config(params),
            params.pretrain.temperature,
            seed=params.seed,
            runtime=runtime,
            checkpoint=checkpoint,
            on_epoch=lambda r: tracker.log_metrics(r, step=r["epoch"]),
        )
        if not runtime.is_main:
            return {}
        summary = write_outputs(params, files, result.encoder, result.state.history, frame, size)
        tracker.log_artifact(files.encoder, "pretrain")
    checkpoint.remove()
    return summary


def write_outputs(
    params: Params,
    files: PretrainFiles,
    encoder: Encoder,
    history: list[dict[str, Any]],
    frame: pd.DataFrame,
    size: tuple[int, int],
) -> dict[str, Any]:
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in encoder.data_config.items()}
    meta = {
        "backbone": params.model.backbone,
        "image_size": list(size),
        "data_config": config,
        "params": select(params, PARAMS),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.backbone.state_dict().items()}
    save_file(state, str(files.encoder), metadata={"olives_encoder": json.dumps(meta)})
    timings = ("epoch_seconds", "images_per_second")
    pd.DataFrame(history).drop(columns=list(timings)).to_csv(files.history, index=False)
    summary = {
        "enabled": True,
        "scans": len(frame),
        "unlabeled_scans": int((frame["split"] == "unlabeled").sum()),
        "patients": int(frame[params.patient_column].nunique()),
        "positives": list(params.pretrain.positives),
        "epochs": len(history),
        "final_loss": history[-1]["train_loss"],
    }
    write_json(files.summary, summary)
    return summary


def _off(params: Params) -> Any:
    return dataclasses.replace(params.tracking, enabled=False)
