"""`pseudo` (paper/teacher/dvc.yaml): the seed's ensemble labels the unlabelled scans.

Only scans the rule allows (`training.distill.eligible_rows`: unlabelled scans of patients in
no validation or test split of the axis's split, the split the student trains and is tested
on) get the ensemble's calibrated probabilities as soft labels, with their confidence and
`keep` (confidence >= `paper.teacher.min_confidence`). Writes
`paper.out_dir/teacher/s<seed>/pseudo.parquet`.
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


def run(params: Params, seed: int) -> dict[str, Any]:
    cell = ensemble.cell_params(params, seed, "ensemble")
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(cell.train.model_dir, runtime.device)
    data = ensemble.unlabelled(cell)
    probs = fold.predict_split(cell, bundle, data, runtime)
    table = pd.DataFrame(probs, columns=list(bundle.labels))
    table.insert(0, ROW, data.rows)
    index = read_index(Path(cell.split.out_dir))
    out = pseudo_labels(index, table, cell.patient_column, params.paper.teacher.min_confidence)
    path = PaperFiles(Path(params.paper.out_dir)).teachers(seed) / FILE
    out.to_parquet(path, index=False)
    kept = int(out[KEEP].sum())
    log.info("pseudo s%d: %d of %d unlabelled scans kept (%s)", seed, kept, len(out), path)
    return {"rows": len(out), "kept": kept}
