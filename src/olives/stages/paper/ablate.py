"""`ablate` (paper/dvc.yaml): train and evaluate one run of the fusion x loss axis.

Each run is the main pipeline's train and evaluate stages with the run's fusion and loss, on
the paper's data (`olives paper data`) cut by patient-split seed `split`, training seed `seed`,
`paper.epochs` epochs, writing its results under `paper.out_dir/runs/<cell>/` (the model
file is scratch, see `cell_folders`) and logging to the
`<experiment>-paper` MLflow experiment; cells are not registered as models (so none can take
the `champion` alias). One DVC matrix stage per cell, so finished cells are
cached and `make paper` can be interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from olives.config import Params, TrainConfig, select
from olives.io import PaperFiles
from olives.stages import evaluate, track, train
from olives.stages.paper.data import data_params

log = logging.getLogger(__name__)

OVERRIDDEN = ("seed", "model.fusion", "loss.name")  # set by the cell, not by params.yaml
PARAMS = (
    *(key for key in select(Params(), train.PARAMS + evaluate.PARAMS) if key not in OVERRIDDEN),
    "paper.epochs",
)


def cell_name(fusion: str, loss: str, split: int, seed: int) -> str:
    return f"{fusion}-{loss}-{PaperFiles.pair(split, seed)}"


def cell_params(params: Params, fusion: str, loss: str, split: int, seed: int) -> Params:
    """The paper's data cut by `split`, with this run's fusion, loss, seed, epochs, folders."""
    name = cell_name(fusion, loss, split, seed)
    cell = dataclasses.replace(
        data_params(params, split),
        seed=seed,
        model=dataclasses.replace(params.model, fusion=fusion),
        loss=dataclasses.replace(params.loss, name=loss),
    )
    cfg = dataclasses.replace(params.train, epochs=params.paper.epochs or params.train.epochs)
    return cell_folders(cell, PaperFiles(Path(params.paper.out_dir)).cell(name), cfg, name)


def cell_folders(cell: Params, folder: Path, cfg: TrainConfig, name: str) -> Params:
    """`cell` training with `cfg` into `folder/{train,eval}` (DVC outputs: the cell's result),
    its model file and checkpoint under `train.checkpoint_dir/paper/` (scratch: no stage
    reads a cell's model, so it is not cached and a fresh clone's `dvc status` stays clean),
    logged to the `<experiment>-paper` MLflow experiment; a grid cell is an experiment, never
    a served model, so it is not registered (and cannot take the `champion` alias)."""
    cfg = dataclasses.replace(
        cfg,
        model_dir=f"{cell.train.checkpoint_dir}/paper-models/{name}",
        report_dir=str(folder / "train"),
        checkpoint_dir=f"{cell.train.checkpoint_dir}/paper/{name}",
    )
    return dataclasses.replace(
        cell,
        train=cfg,
        evaluate=dataclasses.replace(cell.evaluate, out_dir=str(folder / "eval")),
        tracking=dataclasses.replace(
            cell.tracking,
            experiment=f"{cell.tracking.experiment}-paper",
            registered_model=None,
        ),
    )


def run(params: Params, fusion: str, loss: str, split: int, seed: int) -> dict[str, Any]:
    cell = cell_params(params, fusion, loss, split, seed)
    train.run(cell)
    metrics = evaluate.run(cell)
    track.run(cell)  # test metrics on the cell's MLflow run (no registered model)
    log.info(
        "%s: test macro AUROC %s",
        cell_name(fusion, loss, split, seed),
        metrics["macro"].get("auroc"),
    )
    return metrics
