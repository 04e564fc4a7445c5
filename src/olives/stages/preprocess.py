"""`preprocess`: decode every raw image once into the uint8 cache (`preprocess.cache_dir`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from olives.config import COLUMN_KEYS, Params
from olives.data.cache import build_cache
from olives.data.schema import Columns
from olives.io import write_json

log = logging.getLogger(__name__)

PARAMS = (
    *COLUMN_KEYS,
    "preprocess.height",
    "preprocess.width",
    "preprocess.resize",
    "preprocess.max_corrupt_fraction",
)


def run(params: Params) -> dict[str, Any]:
    start = time.perf_counter()
    report = build_cache(Path(params.data.raw_dir), params.preprocess, Columns.from_params(params))
    seconds = time.perf_counter() - start
    write_json(params.preprocess.report, report)
    log.info(
        "cached %d images (%d skipped, %d duplicate rows) in %.1f s (%.0f images/s)",
        report["cached"],
        report["skipped_corrupt"],
        report["duplicate_rows"],
        seconds,
        report["rows_in"] / max(seconds, 1e-9),
    )
    return report
