"""`student` (paper/teacher/dvc.yaml): one model learned from the labelled scans and the
ensemble's pseudo-labels, the teacher axis's distilled student.

Like `single` (the same model without pseudo-labels, the axis's baseline): the axis's split
(train / val / test), `paper.teacher.fusion` and `.epochs`, training seed `seed`; the kept rows
of `pseudo.parquet` join the train split as soft targets of loss weight `paper.teacher.weight`
(`training.distill`). Calibration, thresholds and the bundle are train's, so evaluate, report,
predict and serving take the student unchanged. Evaluated twice: as is (`eval/`) and with
test-time augmentation `paper.teacher.tta` (`eval_tta/`). Writes
`paper.out_dir/teacher/s<seed>/student/`; its MLflow run holds the plain test metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import ConfigError, Params, select
from olives.errors import InputError
from olives.io import PaperFiles
from olives.stages import evaluate, track, train
from olives.stages.paper import fold, pseudo
from olives.stages.paper.ablate import cell_folders
from olives.stages.paper.init_data import data_params
from olives.training.distill import KEEP

log = logging.getLogger(__name__)

# set by the cell from paper.teacher, not by params.yaml
OVERRIDDEN = ("seed", "model.fusion", "train.epochs")
BASE = (
    *(key for key in select(Params(), train.PARAMS + evaluate.PARAMS) if key not in OVERRIDDEN),
    "paper.teacher.fusion",
    "paper.teacher.epochs",
)
PARAMS = (*BASE, "paper.teacher.weight", "paper.teacher.min_confidence", "paper.teacher.tta")


def cell_params(params: Params, seed: int, kind: str) -> Params:
    """The axis's data and split, this seed, the teacher axis's fusion and epochs, every file
    under `teacher/s<seed>/<kind>/` (the model too: a cached output)."""
    cfg = params.paper.teacher
    if params.model.pretrained == "pretrain":
        raise ConfigError(
            "model.pretrained = 'pretrain': the teacher axis trains on the init axis's data, "
            "not from the main pipeline's encoder; use package, hub, none or file:"
        )
    folder = PaperFiles(Path(params.paper.out_dir)).teachers(seed) / kind
    cell = dataclasses.replace(
        data_params(params),
        seed=seed,
        model=dataclasses.replace(params.model, fusion=cfg.fusion),
        tracking=params.tracking,
    )
    epochs = dataclasses.replace(params.train, epochs=cfg.epochs)
    cell = cell_folders(cell, folder, epochs, f"teacher-s{seed}-{kind}")
    return dataclasses.replace(
        cell, train=dataclasses.replace(cell.train, model_dir=str(folder / "model"))
    )


def fit_and_test(params: Params, seed: int, kind: str, labels: Path | None) -> dict[str, Any]:
    """Train (with the pseudo-label table `labels`, if any), evaluate, record in MLflow."""
    cell = cell_params(params, seed, kind)
    train.run(cell, pseudo=labels)
    metrics = evaluate.run(cell)
    track.run(cell)  # the run train logged gets the test metrics (never registered)
    fold.tag_run(cell, {fold.GROUP_TAG: f"teacher-s{seed}", "olives.kind": kind})
    log.info("%s s%d: test macro AUROC %s", kind, seed, metrics["macro"].get("auroc"))
    return metrics


def kept_rows(path: Path, min_confidence: float) -> int:
    """How many pseudo-labelled scans the student learns from; none is an error (the student
    would silently be the single model)."""
    table = pd.read_parquet(path, columns=[KEEP])
    kept = int(table[KEEP].sum())
    if kept == 0:
        raise InputError(
            f"{path}: none of its {len(table)} pseudo-labelled scans reaches "
            f"paper.teacher.min_confidence = {min_confidence}: lower it (0 keeps every scan)"
        )
    return kept


def run(params: Params, seed: int) -> dict[str, Any]:
    labels = PaperFiles(Path(params.paper.out_dir)).teachers(seed) / pseudo.FILE
    kept = kept_rows(labels, params.paper.teacher.min_confidence)
    log.info("student s%d: the labelled scans and %d pseudo-labelled ones", seed, kept)
    metrics = fit_and_test(params, seed, "student", labels)
    cell = cell_params(params, seed, "student")
    folder = Path(cell.evaluate.out_dir).with_name("eval_tta")
    views = dataclasses.replace(cell.evaluate, tta=params.paper.teacher.tta, out_dir=str(folder))
    evaluate.run(dataclasses.replace(cell, evaluate=views))
    return metrics
