"""The paper's data (one patient split per split seed, a large test split) and its
initialisation axis: one encoder per (split, seed), and the init x mode runs (ImageNet vs
clinical-contrastive, linear evaluation vs fine-tuning) into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from olives.config import ConfigError, Params, from_dict, to_dict
from olives.data.prepare import read_index
from olives.io import read_json
from olives.models.bundle import ModelBundle
from olives.stages.paper import aggregate, data, init_cell, init_pretrain
from olives.stages.paper.data import data_params
from olives.stages.train import run_name


def test_the_axes_have_their_own_data_with_unlabelled_scans():
    params = Params()
    axis = data_params(params, 2)
    assert axis.data.include_unlabeled and axis.data.source == "synthetic"
    assert axis.data.synthetic.preset == params.paper.data.preset
    assert axis.data.synthetic.unlabeled_fraction == params.paper.data.unlabeled_fraction
    assert (axis.preprocess.height, axis.preprocess.width) == (params.paper.data.size,) * 2
    folders = [axis.data.raw_dir, axis.preprocess.cache_dir, axis.split.out_dir]
    assert all(f.startswith(params.paper.data.dir) for f in folders)
    assert axis.split.out_dir.endswith("split/p2") and axis.seed == 2  # the split's seed
    assert axis.split.test_fraction == params.paper.data.test_fraction
    # the main pipeline's folders are not touched
    assert params.data.raw_dir not in folders and params.preprocess.cache_dir not in folders


def test_cells_start_from_the_right_encoder_and_are_never_registered():
    params = Params()
    contrastive = init_cell.cell_params(params, "contrastive", "linear", 1, 2)
    assert contrastive.model.pretrained == "pretrain"
    assert contrastive.pretrain.out_dir.endswith("pretrain/p1-s2")  # this pair's encoder
    assert contrastive.split.out_dir.endswith("split/p1")
    assert contrastive.train.freeze_backbone and contrastive.seed == 2
    assert contrastive.model.fusion == params.paper.init.fusion
    assert contrastive.train.epochs == params.paper.init.epochs
    imagenet = init_cell.cell_params(params, "imagenet", "finetune", 1, 2)
    assert imagenet.model.pretrained == params.model.pretrained
    assert not imagenet.train.freeze_backbone
    for cell in (contrastive, imagenet):
        assert cell.tracking.registered_model is None
        assert cell.tracking.experiment == "olives-biomarkers-paper"
    assert contrastive.train.model_dir != imagenet.train.model_dir
    # MLflow run names tell the cells apart
    assert run_name(contrastive) == "e5-s2/image-focal-linear/tf_efficientnet_lite0-contrastive"
    assert run_name(imagenet) == "e5-s2/image-focal/tf_efficientnet_lite0"


def test_imagenet_cells_refuse_a_start_without_pretrained_weights():
    params = from_dict(Params, {"model": {"pretrained": "none"}})
    with pytest.raises(ConfigError, match=r"model\.pretrained = 'none'"):
        init_cell.cell_params(params, "imagenet", "linear", 0, 0)


def test_pretraining_needs_epochs():
    params = from_dict(Params, {"paper": {"init": {"pretrain_epochs": 0}}})
    with pytest.raises(ConfigError, match=r"paper\.init\.pretrain_epochs"):
        init_pretrain.run(params, 0, 0)


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
                "splits": [0, 1],
                "seeds": [0],
                "data": {"preset": "paper-small", "unlabeled_fraction": 3.0, "size": 32},
                "init": {"pretrain_epochs": 1, "epochs": 1},
            },
        },
    )


def test_each_split_seed_draws_its_own_test_patients():
    params = Params()
    assert params.paper.data.preset == "paper" and len(params.paper.splits) >= 3
    patients = 65  # the `paper` preset, pooled
    assert params.paper.data.test_fraction * patients >= 40


def test_the_axis_end_to_end(tmp_path, monkeypatch):
    protocols = Path("paper/protocol").resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper/protocol").symlink_to(protocols)
    params = tiny_params()
    data.run(params)
    tests = []
    for split in (0, 1):
        index = read_index(tmp_path / data_params(params, split).split.out_dir)
        tested = index[index["split"] == "test"]
        tests.append(set(tested["Patient_ID"]))
        share = len(tests[-1]) / index.loc[index["labelled"], "Patient_ID"].nunique()
        assert abs(share - params.paper.data.test_fraction) < 0.1
    assert tests[0] != tests[1]  # a split seed draws its own test patients
    index = read_index(tmp_path / data_params(params, 0).split.out_dir)
    assert (index["split"] == "unlabeled").sum() > (index["split"] == "train").sum()
    summary = init_pretrain.run(params, 0, 0)
    held_out = set(index.loc[index["split"].isin(["val", "test"]), "Patient_ID"])
    assert summary["unlabeled_scans"] > 0
    assert summary["patients"] == len(set(index["Patient_ID"]) - held_out)
    for init in ("imagenet", "contrastive"):
        for mode in ("linear", "finetune"):
            init_cell.run(params, init, mode, 0, 0)
    with pytest.raises(FileNotFoundError, match=r"4 run\(s\) of the init axis .* split 1"):
        aggregate.run(params)  # split 1 has not run: no table from half a grid
    params = from_dict(
        Params, {**to_dict(params), "paper": {**to_dict(params)["paper"], "splits": [0]}}
    )
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
    cell = tmp_path / "reports/paper/init/contrastive-linear-p0-s0"
    trained = init_cell.cell_params(params, "contrastive", "linear", 0, 0)
    bundle = ModelBundle.load(Path(trained.train.model_dir), "cpu")
    assert bundle.params["model.pretrained"] == "pretrain"
    context = read_json(cell / "eval/metrics.json")["context"]
    assert (context["pretrained"], context["freeze_backbone"]) == ("pretrain", True)
    runs = pd.read_csv(tmp_path / "reports/paper/init_runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {0} and set(runs["split"]) == {0}
    assert (tmp_path / "reports/paper/init_paired.csv").is_file()
    text = (tmp_path / "reports/paper/ablation.md").read_text()
    assert "Initialisation: ImageNet vs clinical-contrastive" in text
    assert "Fusion x loss" not in text  # no ablate cell ran: that grid is left out
    assert json.loads((tmp_path / "reports/paper/pretrain/p0-s0/pretrain.json").read_text())[
        "enabled"
    ]
