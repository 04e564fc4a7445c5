"""`fold` (paper/teacher/dvc.yaml): one k-fold teacher of a (split, seed), with out-of-fold
probabilities.

On the paper's data cut by patient-split seed `split`, the labelled patients of that split's
train part are cut into k = len(`paper.teacher.folds`) patient-level stratified folds
(`splits.assign_folds`, seeded by the split seed, so every training seed sees the same folds).
The split's validation patients are never seen by a teacher (their rows are marked
`VALIDATION`), so the student's validation stays independent of the teachers. The teacher of
fold f trains on the other folds (`paper.teacher.epochs` epochs, `paper.teacher.fusion`,
training seed `seed`), validates on fold f, then writes `oof.csv`: the model's calibrated
probabilities for every scan of fold f. Over the k folds, the OOF files cover every labelled
training scan exactly once, so each gets a prediction from a model that never trained on it.

Everything lands in `paper.out_dir/teacher/p<split>-s<seed>/folds/f<fold>/`: `split/` (this
fold's split), `model/` (a cached DVC output: later stages read it), `train/` (the training
record with the fold's validation metrics) and `oof.csv`. MLflow: the `<experiment>-paper`
experiment, never registered, runs tagged `olives.group=teacher-p<split>-s<seed>` and
`olives.fold=<fold>`.
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
from olives.data.prepare import read_index, train_statistics, write_outputs
from olives.data.schema import Columns
from olives.data.splits import SPLITS, assign_folds, split_summary
from olives.io import PaperFiles, file_sha256
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.inference import split_logits
from olives.runtime import Runtime
from olives.stages import train
from olives.stages.paper.ablate import cell_folders
from olives.stages.paper.data import data_params
from olives.tracking.registry import SHA_TAG
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

OOF = "oof.csv"
VALIDATION = "unseen_validation"  # the split's validation patients: no teacher sees them
GROUP_TAG, FOLD_TAG = "olives.group", "olives.fold"
# set by the pair and paper.teacher, not by params.yaml
OVERRIDDEN = ("seed", "model.fusion", "train.epochs")
PARAMS = (
    *(key for key in select(Params(), train.PARAMS) if key not in OVERRIDDEN),
    "patient_column",  # the split's patients and the OOF file's patient column
    "split.candidates",  # the fold assignment
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


def teacher_name(split: int, seed: int, fold: int) -> str:
    return f"teacher-{PaperFiles.pair(split, seed)}-f{fold}"


def teacher_index(index: pd.DataFrame, params: Params, split: int, fold: int) -> pd.DataFrame:
    """The split's index with its training patients cut into k folds, fold `fold` as `val`,
    the rest `train`; every row of a validation patient `VALIDATION`; test rows as they are."""
    k = check_teacher(params.paper.teacher, fold)
    patient = params.patient_column
    out = index.copy()
    held = out[patient].isin(out.loc[out["split"] == "val", patient])
    out.loc[held, "split"] = VALIDATION
    train_rows = out[out["split"] == "train"]
    folds = assign_folds(
        train_rows, params.labels, k, split, params.split.candidates, patient, "sha1"
    )
    out.loc[train_rows.index, "split"] = np.where(folds == fold, "val", "train")
    return out


def write_teacher_split(params: Params, split: int, seed: int, fold: int) -> Path:
    """The teacher's split folder (index, train-only statistics, summary)."""
    index = teacher_index(
        read_index(Path(data_params(params, split).split.out_dir)), params, split, fold
    )
    cols = Columns.from_params(params)
    supervised = index[index["split"].isin(SPLITS)]
    summary = split_summary(supervised, supervised["split"], list(cols.labels), cols.patient)
    summary["unseen_validation_rows"] = int((index["split"] == VALIDATION).sum())
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(split, seed, fold) / "split"
    write_outputs(folder, index, train_statistics(index, cols), summary)
    return folder


def fold_params(params: Params, split: int, seed: int, fold: int) -> Params:
    """The paper's data with this teacher's split, training seed `seed`, the teacher's fusion
    and epochs, every output under `teacher/p<split>-s<seed>/folds/f<fold>/` (the model too:
    a cached output)."""
    cfg = params.paper.teacher
    if params.model.pretrained == "pretrain":
        raise ConfigError(
            "model.pretrained = 'pretrain': the k-fold teachers train on the init axis's data, "
            "not from the main pipeline's encoder; use package, hub, none or file:"
        )
    check_teacher(cfg, fold)
    axis = data_params(params, split)
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(split, seed, fold)
    teacher = dataclasses.replace(
        axis,
        seed=seed,
        model=dataclasses.replace(params.model, fusion=cfg.fusion),
        split=dataclasses.replace(axis.split, out_dir=str(folder / "split")),
    )
    name = teacher_name(split, seed, fold)
    cell = cell_folders(teacher, folder, dataclasses.replace(params.train, epochs=cfg.epochs), name)
    return dataclasses.replace(
        cell, train=dataclasses.replace(cell.train, model_dir=str(folder / "model"))
    )


def group(split: int, seed: int) -> str:
    """The MLflow group tag of a pair's teacher-axis runs."""
    return f"teacher-{PaperFiles.pair(split, seed)}"


def run(params: Params, split: int, seed: int, fold: int) -> dict[str, Any]:
    write_teacher_split(params, split, seed, fold)
    teacher = fold_params(params, split, seed, fold)
    summary = train.run(teacher)
    tag_run(teacher, {GROUP_TAG: group(split, seed), FOLD_TAG: fold})
    folder = PaperFiles(Path(params.paper.out_dir)).teacher(split, seed, fold)
    oof = write_oof(teacher, fold, folder / OOF)
    log.info(
        "%s: val macro AUROC %s, %d out-of-fold scans",
        teacher_name(split, seed, fold),
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
