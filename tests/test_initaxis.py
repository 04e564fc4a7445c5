"""The paper's initialisation axis: its own data, one encoder per seed, and the init x mode
cells (ImageNet vs clinical-contrastive, linear evaluation vs fine-tuning) into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from olives.config import ConfigError, Params, from_dict
from olives.data.prepare import read_index
from olives.io import read_json
from olives.models.bundle import ModelBundle
from olives.stages.paper import aggregate, init_cell, init_data, init_pretrain
from olives.stages.paper.init_data import data_params
from olives.stages.train import run_name


def test_the_axis_has_its_own_data_with_unlabelled_scans():
    params = Params()
    axis = data_params(params)
    assert axis.data.include_unlabeled and axis.data.source == "synthetic"
    assert axis.data.synthetic.preset == params.paper.init.preset
    assert axis.data.synthetic.unlabeled_fraction == params.paper.init.unlabeled_fraction
    assert (axis.preprocess.height, axis.preprocess.width) == (params.paper.init.size,) * 2
    folders = [axis.data.raw_dir, axis.preprocess.cache_dir, axis.split.out_dir]
    assert all(f.startswith(params.paper.init.data_dir) for f in folders)
    # the main pipeline's folders are not touched
    assert params.data.raw_dir not in folders and params.preprocess.cache_dir not in folders


def test_cells_start_from_the_right_encoder_and_are_never_registered():
    params = Params()
    contrastive = init_cell.cell_params(params, "contrastive", "linear", 2)
    assert contrastive.model.pretrained == "pretrain"
    assert contrastive.pretrain.out_dir.endswith("pretrain/s2")  # this seed's encoder
    assert contrastive.train.freeze_backbone and contrastive.seed == 2
    assert contrastive.model.fusion == params.paper.init.fusion
    assert contrastive.train.epochs == params.paper.init.epochs
    imagenet = init_cell.cell_params(params, "imagenet", "finetune", 2)
    assert imagenet.model.pretrained == params.model.pretrained
    assert not imagenet.train.freeze_backbone
    for cell in (contrastive, imagenet):
        assert cell.tracking.registered_model is None
        assert cell.tracking.experiment == "olives-biomarkers-paper"
    assert contrastive.train.model_dir != imagenet.train.model_dir
    # MLflow run names tell the cells apart
    assert run_name(contrastive) == "e10-s2/image-focal-linear/tf_efficientnet_lite0-contrastive"
    assert run_name(imagenet) == "e10-s2/image-focal/tf_efficientnet_lite0"


def test_imagenet_cells_refuse_a_start_without_pretrained_weights():
    params = from_dict(Params, {"model": {"pretrained": "none"}})
    with pytest.raises(ConfigError, match=r"model\.pretrained = 'none'"):
        init_cell.cell_params(params, "imagenet", "linear", 0)


def test_pretraining_needs_epochs():
    params = from_dict(Params, {"paper": {"init": {"pretrain_epochs": 0}}})
    with pytest.raises(ConfigError, match=r"paper\.init\.pretrain_epochs"):
        init_pretrain.run(params, 0)


def tiny_params() -> Params:
    return from_dict(
        Params,
        {
            "data": {"synthetic": {"width": 64, "height": 64}},
            "pretrain": {"batch_size": 16},
            "train": {"batch_size": 16, "progress": False, "num_threads": 1},
            "evaluate": {"bootstrap": 10},
            "tracking": {"enabled": False},
            "paper": {
                "seeds": [0],
                "init": {
                    "preset": "tiny",
                    "unlabeled_fraction": 3.0,
                    "size": 32,
                    "pretrain_epochs": 1,
                    "epochs": 1,
                },
            },
        },
    )


def test_the_axis_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    init_data.run(params)
    axis = data_params(params)
    index = read_index(tmp_path / axis.split.out_dir)
    assert (index["split"] == "unlabeled").sum() > (index["split"] == "train").sum()
    summary = init_pretrain.run(params, 0)
    held_out = set(index.loc[index["split"].isin(["val", "test"]), "Patient_ID"])
    assert summary["unlabeled_scans"] > 0
    assert summary["patients"] == len(set(index["Patient_ID"]) - held_out)
    for init in ("imagenet", "contrastive"):
        for mode in ("linear", "finetune"):
            init_cell.run(params, init, mode, 0)
    aggregate.run(params)
    table = pd.read_csv(tmp_path / "reports/paper/init.csv")
    assert sorted(zip(table["init"], table["mode"], strict=True)) == [
        ("contrastive", "finetune"),
        ("contrastive", "linear"),
        ("imagenet", "finetune"),
        ("imagenet", "linear"),
    ]
    assert table["macro_auroc"].str.match(r"^\d\.\d{3} ± \d\.\d{3}$").all()
    # the contrastive cells really started from the encoder (recorded in the model and metrics)
    cell = tmp_path / "reports/paper/init/contrastive-linear-s0"
    trained = init_cell.cell_params(params, "contrastive", "linear", 0)
    bundle = ModelBundle.load(Path(trained.train.model_dir), "cpu")
    assert bundle.params["model.pretrained"] == "pretrain"
    context = read_json(cell / "eval/metrics.json")["context"]
    assert (context["pretrained"], context["freeze_backbone"]) == ("pretrain", True)
    runs = pd.read_csv(tmp_path / "reports/paper/init_runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {0}
    text = (tmp_path / "reports/paper/ablation.md").read_text()
    assert "Initialisation: ImageNet vs clinical-contrastive" in text
    assert "Fusion x loss" not in text  # no ablate cell ran: that grid is left out
    assert json.loads((tmp_path / "reports/paper/pretrain/s0/pretrain.json").read_text())["enabled"]
