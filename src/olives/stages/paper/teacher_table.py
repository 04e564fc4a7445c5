"""`teacher_table` (paper/teacher/dvc.yaml): the teacher axis's table, mean ± std over seeds
(`olives.reporting.teacher`): `paper.out_dir/teacher.md` and its CSV / LaTeX tables."""

from __future__ import annotations

import logging
from pathlib import Path

from olives.config import Params
from olives.io import PaperFiles
from olives.reporting.teacher import write_teacher

log = logging.getLogger(__name__)

PARAMS = ("paper.teacher.folds",)  # k, named in the text (the seeds are the grid)


def run(params: Params) -> Path:
    paper = PaperFiles(Path(params.paper.out_dir))
    path = write_teacher(paper, params.paper.seeds, len(params.paper.teacher.folds))
    log.info("wrote %s", path)
    return path
