"""`pseudo` (paper/teacher/dvc.yaml): a (split, seed)'s ensemble labels the unlabelled scans.

Only scans the rule allows (`training.distill.eligible_rows`: unlabelled scans of patients in
no validation or test split of the pair's split, the split the student trains and is tested
on) get the ensemble's calibrated probabilities as soft labels, with their confidence and
`keep` (confidence >= `paper.teacher.min_confidence`). Writes
`paper.out_dir/teacher/p<split>-s<seed>/pseudo.parquet`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import Params
from olives.data.prepare import read_index
from olives.io import PaperFiles
from olives.models import ModelBundle
from olives.runtime import Runtime
from olives.stages.paper import ensemble, fold
from olives.training.distill import KEEP, ROW, pseudo_labels

log = logging.getLogger(__name__)

FILE = "pseudo.parquet"
PARAMS = ("patient_column", "evaluate.batch_size", "evaluate.amp", "paper.teacher.min_confidence")


def label_pool(params: Params, cell: Params, model_dir: Path, path: Path) -> pd.DataFrame:
    """The model file under `model_dir` labels the eligible unlabelled scans of `cell`'s split;
    the table goes to `path` (the ensemble's for the student, the single model's for the
    self-training control)."""
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(model_dir, runtime.device)
    data = ensemble.unlabelled(cell)
    probs = fold.predict_split(cell, bundle, data, runtime)
    table = pd.DataFrame(probs, columns=list(bundle.labels))
    table.insert(0, ROW, data.rows)
    index = read_index(Path(cell.split.out_dir))
    out = pseudo_labels(index, table, cell.patient_column, params.paper.teacher.min_confidence)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False)
    log.info("%s: %d of %d unlabelled scans kept", path, int(out[KEEP].sum()), len(out))
    return out


def run(params: Params, split: int, seed: int) -> dict[str, Any]:
    cell = ensemble.cell_params(params, split, seed, "ensemble")
    path = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed) / FILE
    out = label_pool(params, cell, Path(cell.train.model_dir), path)
    return {"rows": len(out), "kept": int(out[KEEP].sum())}
