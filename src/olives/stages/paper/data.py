"""`data` (paper/dvc.yaml): the paper axes' own data, end to end, and one patient split per
split seed.

The main pipeline's data is small and has almost no unlabelled scans, so the axes get their own
synthetic OLIVES (`paper.data.preset`, `paper.data.unlabeled_fraction` unlabelled scans per
labelled one, cached at `paper.data.size` px) under `paper.data.dir`: the download and
preprocess stages run unchanged on the params that `data_params` points there. Then, for each
seed of `paper.splits`, the labelled patients are pooled (the hub's own train / test mark is set
aside, so every split seed draws its own test patients) and split by patient into
`split/p<seed>/`: `paper.data.test_fraction` of them test (>= 40 patients: evaluation only costs
inference, and a large test split narrows each run's interval), `paper.data.val_fraction` of
the rest validation.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from olives.config import COLUMN_KEYS, Params
from olives.data.cache import open_cache
from olives.data.prepare import make_splits, write_outputs
from olives.data.schema import Columns
from olives.data.splits import SOURCE_SPLIT_COLUMN
from olives.stages import download, preprocess

log = logging.getLogger(__name__)

PARAMS = (
    *COLUMN_KEYS,
    "data.synthetic.width",
    "data.synthetic.height",
    "data.synthetic.difficulty",
    "data.synthetic.shard_rows",
    "preprocess.resize",
    "preprocess.max_corrupt_fraction",
    "split.candidates",
    "paper.splits",
    "paper.data.preset",
    "paper.data.unlabeled_fraction",
    "paper.data.size",
    "paper.data.test_fraction",
    "paper.data.val_fraction",
)
GENERATOR_SEED = 0  # the synthetic cohort is one; the split seeds vary who is tested


def split_dir(params: Params, split: int) -> Path:
    """`<paper.data.dir>/split/p<split>/`: the patient split of split seed `split`."""
    return Path(params.paper.data.dir) / "split" / f"p{split}"


def data_params(params: Params, split: int | None = None) -> Params:
    """`params` pointed at the axes' data: synthetic with unlabelled scans, its own folders,
    image size and split fractions; with `split`, that split seed's folder (and `seed` set to
    it, which a training stage replaces with its training seed)."""
    axis = params.paper.data
    root = Path(axis.dir)
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
    parts = dataclasses.replace(
        params.split,
        n_folds=1,
        fold=0,
        val_fraction=axis.val_fraction,
        test_fraction=axis.test_fraction,
        out_dir=str(split_dir(params, split) if split is not None else root / "split"),
    )
    seed = GENERATOR_SEED if split is None else split
    return dataclasses.replace(params, seed=seed, data=data, preprocess=prep, split=parts)


def write_split(params: Params, split: int) -> dict[str, Any]:
    """Pool the labelled patients and split them with split seed `split`."""
    axis = data_params(params, split)
    _, index = open_cache(Path(axis.preprocess.cache_dir))
    pooled = index.assign(**{SOURCE_SPLIT_COLUMN: "train"})
    index, stats, summary = make_splits(pooled, axis.split, Columns.from_params(axis), split)
    write_outputs(Path(axis.split.out_dir), index, stats, summary)
    parts = summary["splits"]
    log.info(
        "split p%d: %s patients (train / val / test)",
        split,
        " / ".join(str(parts[name]["n_patients"]) for name in ("train", "val", "test")),
    )
    return summary


def run(params: Params) -> dict[str, Any]:
    axis = data_params(params)
    report = download.run(axis)
    preprocess.run(axis)
    for split in params.paper.splits:
        write_split(params, split)
    log.info("the paper's data under %s", params.paper.data.dir)
    return report
