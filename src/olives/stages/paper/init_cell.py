"""`init_cell` (paper/dvc.yaml): train and evaluate one run of the init x mode axis.

On the paper's data (`olives paper data`) cut by patient-split seed `split`, training seed
`seed`, `paper.init.fusion`, `paper.init.epochs` epochs:
- init `imagenet` starts from `model.pretrained` (the packaged ImageNet weights by default),
  `contrastive` from this pair's `init_pretrain` encoder (itself pre-trained from ImageNet);
- mode `linear` freezes the backbone (the paper's linear evaluation), `finetune` trains it all.
Writes `paper.out_dir/init/<init>-<mode>-p<split>-s<seed>/` like an `ablate` run; never
registered.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from olives.config import ConfigError, Params, select
from olives.io import PaperFiles
from olives.stages import evaluate, track, train
from olives.stages.paper.ablate import cell_folders
from olives.stages.paper.init_pretrain import pretrain_params

log = logging.getLogger(__name__)

INITS = {"imagenet", "contrastive"}
MODES = {"linear": True, "finetune": False}  # mode -> train.freeze_backbone
# set by the cell (or by `init_pretrain`'s encoder, a file dep), not by params.yaml
OVERRIDDEN = ("seed", "model.fusion", "train.epochs", "train.freeze_backbone")
PARAMS = (
    *(key for key in select(Params(), train.PARAMS + evaluate.PARAMS) if key not in OVERRIDDEN),
    "paper.init.fusion",
    "paper.init.epochs",
)


def cell_name(init: str, mode: str, split: int, seed: int) -> str:
    return f"{init}-{mode}-{PaperFiles.pair(split, seed)}"


def cell_params(params: Params, init: str, mode: str, split: int, seed: int) -> Params:
    """The axis's data params with this cell's start, mode, seed, epochs and folders."""
    if init not in INITS or mode not in MODES:
        raise ConfigError(
            f"init cell {init!r}/{mode!r}: init is one of {sorted(INITS)}, "
            f"mode one of {sorted(MODES)}"
        )
    if init == "imagenet" and params.model.pretrained in ("none", "pretrain"):
        raise ConfigError(
            f"model.pretrained = {params.model.pretrained!r}: the init axis's 'imagenet' cells "
            "need pretrained weights (package, hub or file:)"
        )
    # the split's data, this seed and its encoder folder (`model.pretrained: pretrain` reads it)
    axis = dataclasses.replace(pretrain_params(params, split, seed), tracking=params.tracking)
    name = cell_name(init, mode, split, seed)
    cell = dataclasses.replace(
        axis,
        model=dataclasses.replace(
            params.model,
            fusion=params.paper.init.fusion,
            pretrained="pretrain" if init == "contrastive" else params.model.pretrained,
        ),
    )
    folder = PaperFiles(Path(params.paper.out_dir)).init_runs / name
    return cell_folders(
        cell,
        folder,
        dataclasses.replace(
            params.train, epochs=params.paper.init.epochs, freeze_backbone=MODES[mode]
        ),
        name,
    )


def run(params: Params, init: str, mode: str, split: int, seed: int) -> dict[str, Any]:
    cell = cell_params(params, init, mode, split, seed)
    train.run(cell)
    metrics = evaluate.run(cell)
    track.run(cell)  # test metrics on the cell's MLflow run (no registered model)
    name = cell_name(init, mode, split, seed)
    log.info("%s: test macro AUROC %s", name, metrics["macro"].get("auroc"))
    return metrics
