"""`control` (paper/teacher/dvc.yaml): the student's controls, one row each in the teacher table.

Each asks what the student's gain (if any) is made of, on the pair's split, trained exactly as
`single` / `student` (`student.fit_and_test`):
- `same_steps`: the single model with as many optimizer steps as the student: its labelled
  train split cycled to the student's rows per epoch (labelled + kept pseudo-labelled), the
  same epochs. Is the gain only more steps?
- `self_training`: a student whose pseudo-labels come from the single model itself, not the
  ensemble. Does the ensemble teach more than the model itself?
- `shuffled`: a student whose pseudo-labels are the ensemble's, permuted across scans
  (`training.distill.shuffled`, seeded by the pair): the placebo. Do the labels matter, or
  only the extra images?
Writes `paper.out_dir/teacher/p<split>-s<seed>/<kind>/`, with what it learned from in
`labels/`: `pseudo.parquet` (self-training, shuffled) or `rows.json` (same steps).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import ConfigError, Params
from olives.data.prepare import read_index
from olives.io import PaperFiles, reset_dir, write_json
from olives.stages.paper import pseudo
from olives.stages.paper.student import DISTILLED, cell_params, fit_and_test, kept_rows
from olives.training.distill import shuffled

log = logging.getLogger(__name__)

KINDS = ("same_steps", "self_training", "shuffled")
PARAMS = DISTILLED


def student_rows(params: Params, split: int, seed: int) -> int:
    """Rows per epoch of the pair's student: the labelled train split and the kept
    pseudo-labelled scans."""
    teachers = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed)
    kept = kept_rows(teachers / pseudo.FILE, params.paper.teacher.min_confidence)
    index = read_index(Path(cell_params(params, split, seed, "single").split.out_dir))
    labelled = int((index["split"] == "train").sum())
    return labelled + kept


def labels_dir(params: Params, split: int, seed: int, kind: str) -> Path:
    """`<kind>/labels/`, emptied: what the control learns from (a DVC output)."""
    return reset_dir(PaperFiles(Path(params.paper.out_dir)).teachers(split, seed) / kind / "labels")


def labels_for(params: Params, split: int, seed: int, kind: str) -> Path:
    """The pseudo-label table `kind` learns from, in its `labels/` folder."""
    teachers = PaperFiles(Path(params.paper.out_dir)).teachers(split, seed)
    path = labels_dir(params, split, seed, kind) / pseudo.FILE
    if kind == "self_training":
        single = cell_params(params, split, seed, "single")
        pseudo.label_pool(params, single, Path(single.train.model_dir), path)
    else:
        table = pd.read_parquet(teachers / pseudo.FILE)
        shuffled(table, params.labels, 1000 * split + seed).to_parquet(path, index=False)
    kept_rows(path, params.paper.teacher.min_confidence)
    return path


def run(params: Params, kind: str, split: int, seed: int) -> dict[str, Any]:
    if kind not in KINDS:
        raise ConfigError(f"control {kind!r} is not one of {list(KINDS)}")
    if kind == "same_steps":
        rows = student_rows(params, split, seed)
        write_json(labels_dir(params, split, seed, kind) / "rows.json", {"rows_per_epoch": rows})
        log.info("same_steps %s: %d rows per epoch", PaperFiles.pair(split, seed), rows)
        return fit_and_test(params, split, seed, kind, rows=rows)
    return fit_and_test(params, split, seed, kind, labels_for(params, split, seed, kind))
