"""`init_pretrain` (paper/dvc.yaml): the contrastive encoder of one (split, seed) for the init
axis.

The `pretrain` stage on the paper's data (`olives paper data`) cut by patient-split seed
`split` (so it sees that split's training patients only) for `paper.init.pretrain_epochs`,
with training seed `seed`, writing `paper.out_dir/pretrain/p<split>-s<seed>/` and logging to
the `<experiment>-paper` MLflow experiment. One encoder per pair, so the spread includes
pre-training's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from olives.config import ConfigError, Params
from olives.io import PaperFiles
from olives.stages import pretrain
from olives.stages.paper.data import data_params

OVERRIDDEN = ("seed", "pretrain.epochs")  # set by the cell, not by params.yaml
PARAMS = (
    *(key for key in pretrain.PARAMS if key not in OVERRIDDEN),
    "paper.init.pretrain_epochs",
)


def pretrain_params(params: Params, split: int, seed: int) -> Params:
    """The paper's data cut by `split`, with this seed's pre-training schedule and folders."""
    axis = data_params(params, split)
    folder = PaperFiles(Path(params.paper.out_dir)).encoder(split, seed)
    return dataclasses.replace(
        axis,
        seed=seed,
        pretrain=dataclasses.replace(
            params.pretrain,
            epochs=params.paper.init.pretrain_epochs,
            out_dir=str(folder),
            checkpoint_dir=f"{params.pretrain.checkpoint_dir}/paper/{folder.name}",
        ),
        tracking=dataclasses.replace(
            params.tracking, experiment=f"{params.tracking.experiment}-paper"
        ),
    )


def run(params: Params, split: int, seed: int) -> dict[str, Any]:
    if params.paper.init.pretrain_epochs < 1:
        raise ConfigError("paper.init.pretrain_epochs must be >= 1: the init axis needs an encoder")
    return pretrain.run(pretrain_params(params, split, seed))
