"""Params of the paper's initialisation axis (`paper.init`): where its data lives and how its
encoders are pre-trained. Pure mappings of `Params`, shared by the `init_*` stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from olives.config import Params
from olives.layout import PaperFiles


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


def pretrain_params(params: Params, seed: int) -> Params:
    """The axis's data params with this seed's pre-training schedule and folders."""
    axis = data_params(params)
    folder = PaperFiles(Path(params.paper.out_dir)).encoder(seed)
    return dataclasses.replace(
        axis,
        seed=seed,
        pretrain=dataclasses.replace(
            params.pretrain,
            epochs=params.paper.init.pretrain_epochs,
            out_dir=str(folder),
            checkpoint_dir=f"{params.pretrain.checkpoint_dir}/paper/s{seed}",
        ),
        tracking=dataclasses.replace(
            params.tracking, experiment=f"{params.tracking.experiment}-paper"
        ),
    )
