"""`download`: the configured source into `data.raw_dir` (parquet, hub schema) + `data.report`."""

from __future__ import annotations

import logging
import time
from typing import Any

from olives.config import COLUMN_KEYS, Params
from olives.data.sources import download
from olives.io import write_json

log = logging.getLogger(__name__)

SYNTHETIC = (
    "preset",
    "patients",
    "test_patients",
    "visits",
    "scans_per_volume",
    "width",
    "height",
    "difficulty",
    "unlabeled_fraction",
    "shard_rows",
)  # data.synthetic.num_workers is left out: any worker count writes the same bytes
PARAMS = (
    "seed",
    *COLUMN_KEYS,
    "data.source",
    "data.include_unlabeled",
    "data.huggingface",
    "data.local",
    *(f"data.synthetic.{key}" for key in SYNTHETIC),
)


def run(params: Params) -> dict[str, Any]:
    start = time.perf_counter()
    report = download(params)
    write_json(params.data.report, report)
    for split, info in report["splits"].items():
        log.info(
            "%s: %d rows, %d labelled, %d patients",
            split,
            info["rows"],
            info["labelled_rows"],
            info["patients"],
        )
        for warning in info["warnings"]:
            log.warning(warning)
    log.info("downloaded from %s in %.1f s", params.data.source, time.perf_counter() - start)
    return report
