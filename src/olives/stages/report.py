"""`report`: `report.out_dir/report.md` with figures and LaTeX tables from earlier outputs."""

from __future__ import annotations

import logging
from pathlib import Path

from olives.config import Params
from olives.reporting.report import build_report

log = logging.getLogger(__name__)

PARAMS = ("patient_column", "report.gallery_size")


def run(params: Params) -> Path:
    path = build_report(params)
    log.info("wrote %s", path)
    return path
