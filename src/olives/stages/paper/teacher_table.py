"""`teacher_table` (paper/teacher/dvc.yaml): the teacher axis's table with the paired
comparisons of paper/protocol/teacher.yaml (`olives.reporting.teacher`):
`paper.out_dir/teacher.md` and its CSV / LaTeX tables."""

from __future__ import annotations

import logging
from pathlib import Path

from olives.config import Params
from olives.io import PaperFiles
from olives.reporting.ablation import Grid
from olives.reporting.teacher import write_teacher

log = logging.getLogger(__name__)

# the grid every method must cover, k and the gate's floor (named in the text)
PARAMS = ("paper.splits", "paper.seeds", "paper.teacher.folds", "paper.teacher.min_member_auroc")


def run(params: Params) -> Path:
    paper, cfg = params.paper, params.paper.teacher
    grid = Grid(paper.splits, paper.seeds)
    path = write_teacher(
        PaperFiles(Path(paper.out_dir)), grid, len(cfg.folds), cfg.min_member_auroc
    )
    log.info("wrote %s", path)
    return path
