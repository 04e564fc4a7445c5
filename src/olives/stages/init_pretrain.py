"""`init_pretrain` (paper/dvc.yaml): the contrastive encoder of one seed for the init axis.

The `pretrain` stage on the axis's data (`init_data`) for `paper.init.pretrain_epochs`, with
this seed, writing `paper.out_dir/pretrain/s<seed>/` and logging to the `<experiment>-paper`
MLflow experiment. One encoder per seed, so the spread over seeds includes pre-training's.
"""

from __future__ import annotations

from typing import Any

from olives.config import ConfigError, Params
from olives.initaxis import pretrain_params
from olives.stages import pretrain

OVERRIDDEN = ("seed", "pretrain.epochs")  # set by the cell, not by params.yaml
PARAMS = (
    *(key for key in pretrain.PARAMS if key not in OVERRIDDEN),
    "paper.init.pretrain_epochs",
)


def run(params: Params, seed: int) -> dict[str, Any]:
    if params.paper.init.pretrain_epochs < 1:
        raise ConfigError("paper.init.pretrain_epochs must be >= 1: the init axis needs an encoder")
    return pretrain.run(pretrain_params(params, seed))
