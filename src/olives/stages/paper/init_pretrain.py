"""`init_pretrain` (paper/dvc.yaml): the contrastive encoder of one seed for the init axis.

The `pretrain` stage on the axis's data (`init_data`) for `paper.init.pretrain_epochs`, with
this seed, writing `paper.out_dir/pretrain/s<seed>/` and logging to the `<experiment>-paper`
MLflow experiment. One encoder per seed, so the spread over seeds includes pre-training's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from olives.config import ConfigError, Params
from olives.io import PaperFiles
from olives.stages import pretrain
from olives.stages.paper.init_data import data_params

OVERRIDDEN = ("seed", "pretrain.epochs")  # set by the cell, not by params.yaml
PARAMS = (
    *(key for key in pretrain.PARAMS if key not in OVERRIDDEN),
    "paper.init.pretrain_epochs",
)


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


def run(params: Params, seed: int) -> dict[str, Any]:
    if params.paper.init.pretrain_epochs < 1:
        raise ConfigError("paper.init.pretrain_epochs must be >= 1: the init axis needs an encoder")
    return pretrain.run(pretrain_params(params, seed))
