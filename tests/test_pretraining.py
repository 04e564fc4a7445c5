"""Contrastive pre-training: which rows it may see, that it learns, and exact resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_tiny_cache
from olives.config import TrainConfig
from olives.data.cache import open_cache
from olives.data.prepare import pretraining_rows, read_index
from olives.models.backbone import create_backbone
from olives.runtime import Runtime
from olives.training.checkpoint import Checkpoint
from olives.training.contrastive import positive_codes
from olives.training.pretrain import Encoder, codes_as_split, pretrain

CPU = Runtime(torch.device("cpu"))


def test_no_validation_or_test_patient_reaches_pre_training():
    index = pd.DataFrame(
        {
            "Patient_ID": ["a", "a", "b", "b", "c", "c", "d"],
            "split": ["train", "unlabeled", "val", "unlabeled", "test", "unlabeled", "unlabeled"],
            "row": range(7),
        }
    )
    kept = pretraining_rows(index, "Patient_ID")
    # a: train + its unlabelled scan; b, c: held out, unlabelled scans too; d: never split
    assert kept["row"].tolist() == [0, 1, 6]
    held_out = set(index.loc[index["split"].isin(["val", "test"]), "Patient_ID"])
    assert not held_out & set(kept["Patient_ID"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("pretrain"), size=32, seed=2)


def data_of(root):
    images, _ = open_cache(root / "data/cache")
    frame = pretraining_rows(read_index(root / "data/split"), "Patient_ID")
    codes = positive_codes(frame, ["cst", "patient"], "Patient_ID", cst_bin=25.0)
    return codes_as_split(images, frame, codes)


def run(root, epochs: int, checkpoint=None, on_epoch=None):
    torch.manual_seed(0)
    backbone, data_config = create_backbone("resnet10t", "none")
    cfg = TrainConfig(
        epochs=epochs, batch_size=8, lr=1e-3, warmup_epochs=0.5, progress=False, num_threads=1
    )
    return pretrain(
        Encoder(backbone, data_config, 16),
        data_of(root),
        cfg,
        0.1,
        seed=4,
        runtime=CPU,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )


def test_the_loss_falls_on_a_toy_cache(tiny):
    history = run(tiny, epochs=4).state.history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(np.isfinite(h["train_loss"]) for h in history)


def test_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    straight = run(tiny, epochs=3).encoder.state_dict()
    checkpoint = Checkpoint(tmp_path / "last.pt", "pretrain-test")

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tiny, 3, checkpoint, interrupt)
    assert torch.load(checkpoint.path, weights_only=False)["state"]["epoch"] == 2
    resumed = run(tiny, 3, checkpoint)
    assert len(resumed.state.history) == 3
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed.encoder.state_dict()[name], tensor, rtol=0, atol=0)


def stage_params(root, **over):
    from olives.config import Params, from_dict

    raw = {
        "seed": 3,
        "preprocess": {"height": 32, "width": 32, "cache_dir": str(root / "data/cache")},
        "split": {"out_dir": str(root / "data/split")},
        "model": {"backbone": "resnet10t", "pretrained": "none", "fusion": "image"},
        "loss": {"name": "bce"},
        "pretrain": {
            "epochs": 1,
            "batch_size": 8,
            "positives": ["bcva", "cst"],
            "projection_dim": 16,
            "out_dir": str(root / "pretrain"),
            "checkpoint_dir": str(root / "checkpoints/pretrain"),
        },
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "progress": False,
            "num_threads": 1,
            "check_initial_loss": False,
            "model_dir": str(root / "models"),
            "report_dir": str(root / "reports/train"),
            "checkpoint_dir": str(root / "checkpoints"),
        },
        "tracking": {"enabled": False},
    }
    for section, values in over.items():
        raw[section] = {**raw[section], **values}
    return from_dict(Params, raw)


@pytest.mark.parametrize("fusion", ["image", "concat", "film"])
def test_linear_evaluation_keeps_the_pretrained_encoder(tiny, fusion):
    from safetensors.torch import load_file

    from olives.io import read_json
    from olives.models import ModelBundle
    from olives.stages import pretrain as pretrain_stage
    from olives.stages import train as train_stage

    summary = pretrain_stage.run(stage_params(tiny))
    assert summary["enabled"] and summary["epochs"] == 1 and summary["scans"] > 0
    encoder = load_file(str(tiny / "pretrain/encoder.safetensors"))
    params = stage_params(
        tiny, model={"pretrained": "pretrain", "fusion": fusion}, train={"freeze_backbone": True}
    )
    train_stage.run(params)
    backbone = ModelBundle.load(tiny / "models", "cpu").model.backbone.state_dict()
    assert set(encoder) <= set(backbone)
    for name, tensor in encoder.items():  # frozen: not one weight or BN statistic moved
        torch.testing.assert_close(backbone[name], tensor, rtol=0, atol=0, msg=name)
    assert read_json(tiny / "pretrain/pretrain.json")["positives"] == ["bcva", "cst"]


def test_pretraining_off_and_a_foreign_encoder_are_clear_errors(tiny):
    from olives.errors import InputError
    from olives.models.weights import WeightsUnavailableError
    from olives.stages import pretrain as pretrain_stage
    from olives.stages import train as train_stage

    pretrain_stage.run(stage_params(tiny, pretrain={"epochs": 0}))
    with pytest.raises(InputError, match=r"set pretrain\.epochs > 0"):
        train_stage.run(stage_params(tiny, model={"pretrained": "pretrain"}))
    pretrain_stage.run(stage_params(tiny))
    other = stage_params(tiny, model={"pretrained": "pretrain", "backbone": "resnet18"})
    with pytest.raises(WeightsUnavailableError, match="pre-trained for backbone 'resnet10t'"):
        train_stage.run(other)
