"""`aggregate` (paper/dvc.yaml): the fusion x loss and init tables, each with the paired
comparisons of its protocol (paper/protocol/{ablation,init}.yaml) over every patient split and
training seed."""

from __future__ import annotations

import logging
from pathlib import Path

from olives.config import Params
from olives.io import PaperFiles
from olives.reporting.ablation import Grid, write_ablation

log = logging.getLogger(__name__)

PARAMS = ("paper.splits", "paper.seeds")  # the grid every method must cover


def run(params: Params) -> Path:
    grid = Grid(params.paper.splits, params.paper.seeds)
    path = write_ablation(PaperFiles(Path(params.paper.out_dir)), grid)
    log.info("wrote %s", path)
    return path
