"""`ensemble` (paper/teacher/dvc.yaml): one (split, seed)'s k fold teachers as one model file,
tested, each member through a quality gate.

The members' calibrated probabilities are averaged (`olives.models.ensemble`). The thresholds
are tuned on the out-of-fold probabilities (each labelled training scan predicted by the
teacher that never trained on it: no scan the decisions are tuned on was learned), then
rate-matched: averaging flattens probabilities, so a member's threshold calls fewer or more
scans positive on the mean than the members do. On the eligible unlabelled scans (the pool
`pseudo` labels: no label, no validation or test patient), each biomarker's threshold becomes
the one at which the ensemble calls as many scans positive as its members do on average at the
out-of-fold threshold (`rate_matched`). Without unlabelled scans the out-of-fold thresholds
stay, and the log says so. (Rate matching is listed as post hoc in the teacher protocol.)

Quality gate: `members.csv` lists each member's best epoch and out-of-fold macro AUROC; a
member whose best epoch is 0 (it never improved on its first epoch) or whose out-of-fold macro
AUROC is below `paper.teacher.min_member_auroc` fails, is logged by name, and the teacher table
names it and says the ensemble includes it (members are not dropped: that would be a choice
made after seeing them). The file is
an ordinary model bundle, so `evaluate` scores it on the axis's test split like any model, and
`olives predict --model` and the MLflow pyfunc take it unchanged. Writes
`paper.out_dir/teacher/p<split>-s<seed>/ensemble/{model,eval,members.csv}`; the test metrics go
to an MLflow run of the `<experiment>-paper` experiment, found again by the file's SHA-256
(never registered).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import Params
from olives.data.cache import open_cache
from olives.data.loader import SplitData
from olives.data.prepare import clinical_features, read_index, read_stats
from olives.evaluation.metrics import per_label_metrics, tune_thresholds
from olives.io import PaperFiles, TrainFiles, file_sha256, read_json, reset_dir
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.combine import combine
from olives.runtime import Runtime
from olives.stages import evaluate, track
from olives.stages.paper import fold
from olives.stages.paper.data import data_params
from olives.tracking.registry import SHA_TAG
from olives.tracking.runs import Tracker
from olives.training.distill import ROW, eligible_rows

log = logging.getLogger(__name__)

PARAMS = (*evaluate.PARAMS, "paper.teacher.folds", "paper.teacher.min_member_auroc")
MEMBERS = "members.csv"


def out_of_fold(folders: list[Path], labels: tuple[str, ...]) -> pd.DataFrame:
    """The k teachers' `oof.csv` files as one table, each scan once."""
    table = pd.concat([pd.read_csv(f / fold.OOF) for f in folders], ignore_index=True)
    if table["row"].duplicated().any():
        raise ValueError(f"{folders[0].parent}: a scan is out of fold in two folds")
    missing = [c for name in labels for c in (name, f"{name}_prob") if c not in table]
    if missing:
        raise ValueError(f"{folders[0].parent}: out-of-fold files lack {missing}")
    return table


def member_gate(folders: list[Path], labels: tuple[str, ...], floor: float) -> pd.DataFrame:
    """One row per member: its fold, best epoch, out-of-fold macro AUROC, whether it passes
    the gate (best epoch > 0 and AUROC >= `floor`) and why not."""
    rows = []
    for folder in folders:
        oof = pd.read_csv(folder / fold.OOF)
        table = per_label_metrics(
            oof[list(labels)].to_numpy(),
            oof[[f"{name}_prob" for name in labels]].to_numpy(),
            np.full(len(labels), 0.5),
            labels,
        )
        auroc = float(table["auroc"].mean())
        best = int(read_json(TrainFiles(folder / "train").metrics)["best_epoch"])
        reasons = ["stopped at epoch 0"] * (best == 0)
        if not auroc >= floor:
            reasons.append(f"out-of-fold macro AUROC {auroc:.3f} < {floor}")
        rows.append(
            {
                "member": folder.name,
                "best_epoch": best,
                "oof_macro_auroc": round(auroc, 6),
                "passed": not reasons,
                "reason": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows)


def build(params: Params, split: int, seed: int) -> ModelBundle:
    """The ensemble of the pair's fold teachers, thresholds tuned out of fold."""
    folds = params.paper.teacher.folds
    fold.check_teacher(params.paper.teacher, folds[0])
    paper = PaperFiles(Path(params.paper.out_dir))
    folders = [paper.teacher(split, seed, f) for f in folds]
    paths = [folder / "model" / MODEL_FILE for folder in folders]
    members = [ModelBundle.load(path, "cpu") for path in paths]
    labels = members[0].labels
    oof = out_of_fold(folders, labels)
    thresholds = tune_thresholds(
        oof[list(labels)].to_numpy(), oof[[f"{name}_prob" for name in labels]].to_numpy()
    )
    cell = cell_params(params, split, seed, "ensemble")
    name = PaperFiles.pair(split, seed)
    pool = unlabelled(cell)
    if len(pool) == 0:
        log.warning("ensemble %s: no unlabelled scans: the out-of-fold thresholds stay", name)
    else:
        runtime = Runtime.from_env()
        probs = np.stack([fold.predict_split(cell, m, pool, runtime) for m in members])
        thresholds = rate_matched(probs, thresholds)
        log.info("ensemble %s: thresholds rate-matched on %d unlabelled scans", name, len(pool))
    stats = read_stats(Path(cell.split.out_dir))["clinical"]
    hashes = [file_sha256(path) for path in paths]
    info = {"split": split, "seed": seed, "thresholds_matched_on": len(pool)}
    return combine(members, [float(t) for t in thresholds], stats, hashes, info)


def unlabelled(cell: Params) -> SplitData:
    """The eligible unlabelled scans of the axis's split (`distill.eligible_rows`: no
    validation or test patient), as a split to predict on."""
    index = read_index(Path(cell.split.out_dir))
    rows = eligible_rows(index, cell.patient_column)
    images, _ = open_cache(Path(cell.preprocess.cache_dir))
    return SplitData(
        images=images,
        rows=rows[ROW].to_numpy(np.int64),
        labels=np.zeros((len(rows), len(cell.labels)), dtype=np.float32),  # unknown
        clinical=clinical_features(rows, cell.clinical),
        frame=rows,
    )


def rate_matched(member_probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per label, the threshold at which the mean of `member_probs` [K, N, L] calls as many of
    the N scans positive as the K members do on average at `thresholds` [L]: halfway between
    the mean's n-th and (n+1)-th largest value, n that count."""
    members = member_probs.shape[0]
    mean = member_probs.mean(axis=0)
    out = np.empty(len(thresholds))
    for j, threshold in enumerate(thresholds):
        positives = round(float((member_probs[:, :, j] >= threshold).sum()) / members)
        ranked = np.concatenate([[1.0], np.sort(mean[:, j])[::-1], [0.0]])
        out[j] = (ranked[positives] + ranked[positives + 1]) / 2
    return out


def cell_params(params: Params, split: int, seed: int, name: str) -> Params:
    """The paper's data cut by `split` and its test split, the model file and evaluation under
    `teacher/p<split>-s<seed>/<name>/`, the `-paper` MLflow experiment, nothing registered."""
    folder = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed) / name
    axis = data_params(params, split)
    return dataclasses.replace(
        axis,
        seed=seed,
        train=dataclasses.replace(params.train, model_dir=str(folder / "model")),
        evaluate=dataclasses.replace(params.evaluate, out_dir=str(folder / "eval")),
        tracking=dataclasses.replace(
            params.tracking,
            experiment=f"{params.tracking.experiment}-paper",
            registered_model=None,
        ),
    )


def record(cell: Params, run_name: str, tags: dict[str, Any]) -> None:
    """An MLflow run with the test metrics of `cell`'s model file, once per file (found again
    by its SHA-256, so DVC restoring the stage or running it twice adds nothing)."""
    tracker = Tracker(cell.tracking)
    if not tracker.enabled:
        return
    sha = file_sha256(Path(cell.train.model_dir) / MODEL_FILE)
    if tracker.find_run(SHA_TAG, sha) is not None:
        return
    with tracker.run(run_name=run_name, tags={SHA_TAG: sha, **tags}):
        tracker.log_metrics(track.tested(cell, sha))


def run(params: Params, split: int, seed: int) -> dict[str, Any]:
    cell = cell_params(params, split, seed, "ensemble")
    paper = PaperFiles(Path(params.paper.out_dir))
    folders = [paper.teacher(split, seed, f) for f in params.paper.teacher.folds]
    gate = member_gate(folders, params.labels, params.paper.teacher.min_member_auroc)
    folder = paper.teachers(split, seed) / "ensemble"
    folder.mkdir(parents=True, exist_ok=True)
    gate.to_csv(folder / MEMBERS, index=False)
    for row in gate[~gate["passed"]].itertuples():
        log.warning(
            "ensemble %s: member %s fails the gate (%s); it is included",
            PaperFiles.pair(split, seed),
            row.member,
            row.reason,
        )
    bundle = build(params, split, seed)
    bundle.save(reset_dir(cell.train.model_dir))
    metrics = evaluate.run(cell)
    group = fold.group(split, seed)
    record(cell, f"{group}-ensemble", {fold.GROUP_TAG: group})
    log.info("ensemble %s: test macro AUROC %s", group, metrics["macro"].get("auroc"))
    return metrics
