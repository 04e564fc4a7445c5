"""`init_data` (paper/dvc.yaml): the initialisation axis's own data, end to end.

The main pipeline's data has almost no unlabelled scans, so the axis gets its own synthetic
OLIVES (`paper.init.preset`, `paper.init.unlabeled_fraction` unlabelled scans per labelled one,
cached at `paper.init.size` px) under `paper.init.data_dir`: the download, preprocess and split
stages run unchanged on the params that `data_params` points there.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from olives.config import COLUMN_KEYS, Params
from olives.stages import download, preprocess, split

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    *COLUMN_KEYS,
    "data.synthetic.width",
    "data.synthetic.height",
    "data.synthetic.difficulty",
    "data.synthetic.shard_rows",
    "preprocess.resize",
    "preprocess.max_corrupt_fraction",
    "split.val_fraction",
    "split.candidates",
    "paper.init.preset",
    "paper.init.unlabeled_fraction",
    "paper.init.size",
)


def data_params(params: Params) -> Params:
    """`params` pointed at the axis's data: synthetic with unlabelled scans, its own folders and
    image size; every other setting (seed, labels, split fractions) is the pipeline's."""
    axis = params.paper.init
    root = Path(axis.data_dir)
    synthetic = dataclasses.replace(
        params.data.synthetic,
        preset=axis.preset,
        patients=None,
        test_patients=None,
        visits=None,
        scans_per_volume=None,
        unlabeled_fraction=axis.unlabeled_fraction,
    )
    data = dataclasses.replace(
        params.data,
        source="synthetic",
        include_unlabeled=True,
        raw_dir=str(root / "raw"),
        report=str(root / "raw_report.json"),
        synthetic=synthetic,
    )
    prep = dataclasses.replace(
        params.preprocess,
        height=axis.size,
        width=axis.size,
        cache_dir=str(root / "cache"),
        report=str(root / "preprocess.json"),
    )
    parts = dataclasses.replace(params.split, n_folds=1, fold=0, out_dir=str(root / "split"))
    return dataclasses.replace(params, data=data, preprocess=prep, split=parts)


def run(params: Params) -> dict[str, Any]:
    axis = data_params(params)
    report = download.run(axis)
    preprocess.run(axis)
    split.run(axis)
    log.info("init axis data under %s", params.paper.init.data_dir)
    return report
