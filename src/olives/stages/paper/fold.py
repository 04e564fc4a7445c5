"""`fold` (paper/dvc.yaml): one k-fold teacher of the seeds x folds grid, with out-of-fold
probabilities.

On the init axis's data (`init_data`), the labelled non-test patients are cut into
k = len(`paper.teacher.folds`) patient-level stratified folds (`split.n_folds` / `split.fold`);
the cut depends on `params.seed` only, so every training seed sees the same folds. The teacher
of fold f trains on the other folds (`paper.teacher.epochs` epochs, `paper.teacher.fusion`,
training seed `seed`), validates on fold f, then writes `oof.csv`: the model's calibrated
probabilities for every scan of fold f. Over the k folds, the OOF files cover every labelled
non-test scan exactly once, so each gets a prediction from a model that never trained on it.

Everything lands in `paper.out_dir/teacher/s<seed>/f<fold>/`: `split/` (this fold's split;
kept here, not under `paper.init.data_dir`, which is `init_data`'s DVC output), `model/` (a
cached DVC output: later stages read it, unlike an `ablate` cell's scratch model), `train/`
(the training record with the fold's validation metrics) and `oof.csv`. MLflow: the
`<experiment>-paper` experiment, never registered, runs tagged `olives.group=teacher-s<seed>`
and `olives.fold=<fold>`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import ConfigError, Params, TeacherConfig, select
from olives.data.loader import SplitData, split_of
from olives.io import PaperFiles, file_sha256
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.inference import split_logits
from olives.runtime import Runtime
from olives.stages import split, train
from olives.stages.paper.ablate import cell_folders
from olives.stages.paper.init_data import data_params
from olives.tracking.registry import SHA_TAG
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

OOF = "oof.csv"
GROUP_TAG, FOLD_TAG = "olives.group", "olives.fold"
# set by paper.teacher; `seed` stays a dependency: it cuts the folds (the grid's seed trains)
OVERRIDDEN = ("model.fusion", "train.epochs")
PARAMS = (
    *(key for key in select(Params(), train.PARAMS) if key not in OVERRIDDEN),
    "patient_column",  # the split's patients and the OOF file's patient column
    "split.candidates",  # the fold assignment (`seed` is the split's seed, already listed)
    "evaluate.batch_size",  # the OOF predictions
    "evaluate.amp",
    "paper.teacher",
)


def check_teacher(cfg: TeacherConfig, fold: int) -> int:
    """k for `cfg`, after checking the grid: folds 0..k-1 with k >= 2, `fold` one of them."""
    k = len(cfg.folds)
    if k < 2 or sorted(cfg.folds) != list(range(k)):
        raise ConfigError(
            f"'paper.teacher.folds' = {list(cfg.folds)} must be 0..k-1 with k >= 2 (k = number "
            "of folds)"
        )
    if fold not in cfg.folds:
        raise ConfigError(f"fold {fold} is not in 'paper.teacher.folds' = {list(cfg.folds)}")
    if cfg.epochs < 1:
        raise ConfigError(f"'paper.teacher.epochs' = {cfg.epochs} must be >= 1")
    return k


def teacher_name(seed: int, fold: int) -> str:
    return f"teacher-s{seed}-f{fold}"


def split_params(params: Params, seed: int, fold: int) -> Params:
    """The axis's data with fold `fold` of the k-fold as val, written under this teacher's
    folder; the seed is the pipeline's (`params.seed`), so the folds are the same for every
    training seed."""
    k = check_teacher(params.paper.teacher, fold)
    axis = data_params(params)
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(seed, fold)
    parts = dataclasses.replace(axis.split, n_folds=k, fold=fold, out_dir=str(folder / "split"))
    return dataclasses.replace(axis, split=parts)


def fold_params(params: Params, seed: int, fold: int) -> Params:
    """`split_params` with training seed `seed`, the teacher's fusion and epochs, and every
    output under `paper.out_dir/teacher/s<seed>/f<fold>/` (the model too: a cached output)."""
    cfg = params.paper.teacher
    if params.model.pretrained == "pretrain":
        raise ConfigError(
            "model.pretrained = 'pretrain': the k-fold teachers train on the init axis's data, "
            "not from the main pipeline's encoder; use package, hub, none or file:"
        )
    axis = split_params(params, seed, fold)
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(seed, fold)
    teacher = dataclasses.replace(
        axis, seed=seed, model=dataclasses.replace(params.model, fusion=cfg.fusion)
    )
    name = teacher_name(seed, fold)
    cell = cell_folders(teacher, folder, dataclasses.replace(params.train, epochs=cfg.epochs), name)
    return dataclasses.replace(
        cell, train=dataclasses.replace(cell.train, model_dir=str(folder / "model"))
    )


def run(params: Params, seed: int, fold: int) -> dict[str, Any]:
    split.run(split_params(params, seed, fold))
    teacher = fold_params(params, seed, fold)
    summary = train.run(teacher)
    tag_run(teacher, {GROUP_TAG: f"teacher-s{seed}", FOLD_TAG: fold})
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(seed, fold)
    oof = write_oof(teacher, fold, folder / OOF)
    log.info(
        "%s: val macro AUROC %s, %d out-of-fold scans",
        teacher_name(seed, fold),
        summary.get("val_macro_auroc"),
        len(oof),
    )
    return {**summary, "oof_rows": len(oof)}


def tag_run(cell: Params, tags: dict[str, Any]) -> None:
    """Tag the MLflow run that trained this cell's model file (so a seed's teachers, ensemble
    and student group in the runs table)."""
    tracker = Tracker(cell.tracking)
    if not tracker.enabled:
        return
    sha = file_sha256(Path(cell.train.model_dir) / MODEL_FILE)
    run_id = tracker.find_run(SHA_TAG, sha)
    if run_id is None:
        log.warning("no MLflow run holds model %s: it is not tagged", sha[:12])
        return
    with tracker.run(run_id=run_id):
        tracker.set_tags(tags)


def predict_split(
    teacher: Params, bundle: ModelBundle, data: SplitData, runtime: Runtime
) -> np.ndarray:
    """Calibrated probabilities [N, L] of `bundle` on `data`, in its row order, as `evaluate`
    predicts (without test-time augmentation)."""
    return bundle.probabilities(split_logits(bundle.model, data, runtime, teacher.evaluate))


def write_oof(teacher: Params, fold: int, path: Path) -> pd.DataFrame:
    """`oof.csv`: every validation (held-out fold) scan with its truth and the teacher's
    calibrated probabilities `<L>_prob`."""
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(teacher.train.model_dir, runtime.device)
    held_out = split_of(teacher, "val", bundle.labels, bundle.clinical)
    probs = predict_split(teacher, bundle, held_out, runtime)
    frame, patient = held_out.frame, teacher.patient_column
    table = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "path": frame["path"],
            patient: frame[patient],
            "eye": frame["eye"],
            "row": frame["row"],
            "fold": fold,
        }
    )
    for j, name in enumerate(bundle.labels):
        table[name] = held_out.labels[:, j].astype(np.int8)
    for j, name in enumerate(bundle.labels):
        table[f"{name}_prob"] = probs[:, j].round(6)
    table.to_csv(path, index=False)
    return table
