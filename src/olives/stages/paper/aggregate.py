"""`aggregate` (paper/dvc.yaml): the ablation table, mean ± std over seeds per cell."""

from __future__ import annotations

import logging
from pathlib import Path

from olives.config import Params
from olives.io import PaperFiles
from olives.reporting.ablation import write_ablation

log = logging.getLogger(__name__)

PARAMS: tuple[str, ...] = ()


def run(params: Params) -> Path:
    path = write_ablation(PaperFiles(Path(params.paper.out_dir)))
    log.info("wrote %s", path)
    return path
