"""`init_data` (paper/dvc.yaml): the initialisation axis's own data, end to end.

The main pipeline's data has almost no unlabelled scans, so the axis gets its own synthetic
OLIVES (`paper.init.preset`, `paper.init.unlabeled_fraction` unlabelled scans per labelled one,
cached at `paper.init.size` px) under `paper.init.data_dir`: the download, preprocess and split
stages run unchanged on the params that `data_params` points there.
"""

from __future__ import annotations

import logging
from typing import Any

from olives.config import Params
from olives.initaxis import data_params
from olives.stages import download, preprocess, split

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    "labels",
    "clinical",
    "image_column",
    "patient_column",
    "eye_column",
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


def run(params: Params) -> dict[str, Any]:
    axis = data_params(params)
    report = download.run(axis)
    preprocess.run(axis)
    split.run(axis)
    log.info("init axis data under %s", params.paper.init.data_dir)
    return report
