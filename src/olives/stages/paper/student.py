"""`student` (paper/teacher/dvc.yaml): one model learned from the labelled scans and the
ensemble's pseudo-labels, the teacher axis's distilled student.

Like `single` (the same model without pseudo-labels, the axis's baseline): the pair's split
(train / val / test), `paper.teacher.fusion` and `.epochs`, training seed `seed`; the kept rows
of `pseudo.parquet` join the train split as soft targets of loss weight `paper.teacher.weight`
(`training.distill`). Calibration, thresholds and the bundle are train's, so evaluate, report,
predict and serving take the student unchanged. Evaluated twice: as is (`eval/`) and with
test-time augmentation `paper.teacher.tta` (`eval_tta/`), the latter with temperatures and
thresholds refitted on the validation split's TTA logits (`model_tta/`), so each row is decided
on the logits it is scored with. Writes `paper.out_dir/teacher/p<split>-s<seed>/student/`; its
MLflow run holds the plain test metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import ConfigError, Params, select
from olives.data.loader import split_of
from olives.errors import InputError
from olives.evaluation.calibration import fit_decisions
from olives.io import PaperFiles, reset_dir
from olives.models import ModelBundle
from olives.models.inference import split_logits
from olives.runtime import Runtime
from olives.stages import evaluate, track, train
from olives.stages.paper import fold, pseudo
from olives.stages.paper.ablate import cell_folders
from olives.stages.paper.data import data_params
from olives.training.distill import KEEP

log = logging.getLogger(__name__)

# set by the cell from the pair and paper.teacher, not by params.yaml
OVERRIDDEN = ("seed", "model.fusion", "train.epochs")
BASE = (
    *(key for key in select(Params(), train.PARAMS + evaluate.PARAMS) if key not in OVERRIDDEN),
    "paper.teacher.fusion",
    "paper.teacher.epochs",
)
DISTILLED = (*BASE, "paper.teacher.weight", "paper.teacher.min_confidence")
PARAMS = (*DISTILLED, "paper.teacher.tta")


def cell_params(params: Params, split: int, seed: int, kind: str) -> Params:
    """The pair's data and split, the teacher axis's fusion and epochs, every file under
    `teacher/p<split>-s<seed>/<kind>/` (the model too: a cached output)."""
    cfg = params.paper.teacher
    if params.model.pretrained == "pretrain":
        raise ConfigError(
            "model.pretrained = 'pretrain': the teacher axis trains on the paper's data, "
            "not from the main pipeline's encoder; use package, hub, none or file:"
        )
    folder = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed) / kind
    cell = dataclasses.replace(
        data_params(params, split),
        seed=seed,
        model=dataclasses.replace(params.model, fusion=cfg.fusion),
        tracking=params.tracking,
    )
    epochs = dataclasses.replace(params.train, epochs=cfg.epochs)
    cell = cell_folders(cell, folder, epochs, f"{fold.group(split, seed)}-{kind}")
    return dataclasses.replace(
        cell, train=dataclasses.replace(cell.train, model_dir=str(folder / "model"))
    )


def fit_and_test(
    params: Params,
    split: int,
    seed: int,
    kind: str,
    labels: Path | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """Train (with the pseudo-label table `labels`, or the train split cycled to `rows` rows
    per epoch, if given), evaluate, record in MLflow."""
    cell = cell_params(params, split, seed, kind)
    train.run(cell, pseudo=labels, rows=rows)
    metrics = evaluate.run(cell)
    track.run(cell)  # the run train logged gets the test metrics (never registered)
    fold.tag_run(cell, {fold.GROUP_TAG: fold.group(split, seed), "olives.kind": kind})
    name = PaperFiles.pair(split, seed)
    log.info("%s %s: test macro AUROC %s", kind, name, metrics["macro"].get("auroc"))
    return metrics


def kept_rows(path: Path, min_confidence: float) -> int:
    """How many pseudo-labelled scans a student learns from; none is an error (the student
    would silently be the single model)."""
    table = pd.read_parquet(path, columns=[KEEP])
    kept = int(table[KEEP].sum())
    if kept == 0:
        raise InputError(
            f"{path}: none of its {len(table)} pseudo-labelled scans reaches "
            f"paper.teacher.min_confidence = {min_confidence}: lower it (0 keeps every scan)"
        )
    return kept


def tta_bundle(cell: Params, views: tuple[str, ...]) -> ModelBundle:
    """The trained model with temperatures and thresholds refitted on the validation split's
    logits under the test-time views `views` (`fit_decisions`, the rule training uses)."""
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(cell.train.model_dir, runtime.device)
    val = split_of(cell, "val", bundle.labels, bundle.clinical)
    logits = split_logits(bundle.model, val, runtime, cell.evaluate, views)
    temperatures, thresholds, _ = fit_decisions(logits, val.labels, cell.train.calibrate)
    return dataclasses.replace(
        bundle,
        temperatures=tuple(float(t) for t in temperatures),
        thresholds=tuple(float(t) for t in thresholds),
    )


def evaluate_tta(cell: Params, views: tuple[str, ...]) -> dict[str, Any]:
    """`eval_tta/`: the test split under `views`, decided by `tta_bundle` (`model_tta/`)."""
    folder = Path(cell.train.model_dir).parent
    tta_bundle(cell, views).save(reset_dir(folder / "model_tta"))
    views_cell = dataclasses.replace(
        cell,
        train=dataclasses.replace(cell.train, model_dir=str(folder / "model_tta")),
        evaluate=dataclasses.replace(cell.evaluate, tta=views, out_dir=str(folder / "eval_tta")),
    )
    return evaluate.run(views_cell)


def run(params: Params, split: int, seed: int) -> dict[str, Any]:
    labels = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed) / pseudo.FILE
    kept = kept_rows(labels, params.paper.teacher.min_confidence)
    log.info("student %s: the labelled scans and %d pseudo-labelled ones", split, kept)
    metrics = fit_and_test(params, split, seed, "student", labels)
    evaluate_tta(cell_params(params, split, seed, "student"), params.paper.teacher.tta)
    return metrics
