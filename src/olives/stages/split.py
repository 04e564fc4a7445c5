"""`split`: patient-level splits of the cache index and train-only statistics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from olives.config import Params
from olives.data.cache import open_cache
from olives.data.prepare import make_splits, write_outputs
from olives.data.schema import Columns

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    "labels",
    "clinical",
    "patient_column",
    "split.val_fraction",
    "split.test_fraction",
    "split.n_folds",
    "split.fold",
    "split.candidates",
)


def run(params: Params) -> dict[str, Any]:
    _, index = open_cache(Path(params.preprocess.cache_dir))
    cols = Columns.from_params(params)
    index, stats, summary = make_splits(index, params.split, cols, params.seed)
    write_outputs(Path(params.split.out_dir), index, stats, summary)
    for name, part in summary["splits"].items():
        log.info("%s: %d patients, %d rows", name, part["n_patients"], part["n_rows"])
    return summary
