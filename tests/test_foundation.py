"""Vision transformers and retinal foundation models: RETFound-style checkpoints (MAE `model`,
DINOv2 `teacher`) written here with random weights, loaded strictly at another input size;
layer-wise learning-rate decay; Grad-CAM and the report for a ViT backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from olives.config import ModelConfig, TrainConfig
from olives.models import WeightsUnavailableError, build_model
from olives.models.gradcam import grad_cam
from olives.models.weights import load_vit_checkpoint

VIT = "vit_tiny_patch16_224"


def mae_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A RETFound MAE checkpoint: encoder weights of a 224-px ViT plus decoder keys, under
    `model`, as `main_pretrain.py` saves them."""
    torch.manual_seed(0)
    encoder = timm.create_model(VIT, num_classes=0).state_dict()
    decoder = {
        "mask_token": torch.zeros(1, 1, 128),
        "decoder_embed.weight": torch.randn(128, 192),
        "decoder_pos_embed": torch.randn(1, 197, 128),
        "decoder_blocks.0.norm1.weight": torch.ones(128),
        "decoder_pred.weight": torch.randn(768, 128),
    }
    torch.save({"model": {**encoder, **decoder}, "epoch": 799}, path)
    return encoder


def dinov2_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A DINOv2 training checkpoint: the teacher's backbone under `teacher`, keys prefixed
    `backbone.`, blocks in chunks, with the DINO and iBOT heads."""
    torch.manual_seed(1)
    encoder = timm.create_model(VIT, num_classes=0).state_dict()
    teacher = {}
    for key, value in encoder.items():
        parts = key.split(".")
        if parts[0] == "blocks":  # 12 blocks in 4 chunks of 3
            i = int(parts[1])
            key = ".".join(["blocks", str(i // 3), str(i), *parts[2:]])
        teacher[f"backbone.{key}"] = value
    teacher["dino_head.mlp.0.weight"] = torch.randn(16, 192)
    teacher["ibot_head.mlp.0.weight"] = torch.randn(16, 192)
    torch.save({"teacher": teacher, "iteration": 1}, path)
    return encoder


@pytest.mark.parametrize("write", [mae_checkpoint, dinov2_checkpoint])
def test_retfound_checkpoints_load_strictly_at_another_size(tmp_path, write):
    path = tmp_path / "retfound.pth"
    encoder = write(path)
    cfg = ModelConfig(backbone=VIT, pretrained=f"file:{path}", fusion="concat")
    model = build_model(cfg, 6, 2, img_size=(48, 48))  # 3 x 3 patches instead of 14 x 14
    own = model.backbone.state_dict()
    assert own["pos_embed"].shape == (1, 1 + 9, 192)
    for key, value in encoder.items():
        if key != "pos_embed":
            torch.testing.assert_close(own[key], value, msg=key)
    cls = own["pos_embed"][:, :1]
    torch.testing.assert_close(cls, encoder["pos_embed"][:, :1])  # the class token's is kept
    logits = model(torch.rand(2, 1, 48, 48), torch.zeros(2, 4))  # 1-channel input, as CNNs
    assert logits.shape == (2, 6)


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 192)}}, path)
    with pytest.raises(WeightsUnavailableError, match=r"mae layout.*missing \['blocks"):
        load_vit_checkpoint(timm.create_model(VIT, num_classes=0), path)


def test_layer_decay_gives_early_layers_smaller_learning_rates():
    from timm.optim import create_optimizer_v2

    model = build_model(ModelConfig(backbone=VIT, pretrained="none"), 6, 2, img_size=(32, 32))
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.5)
    scale = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scale[names[id(p)]] = group["lr_scale"]
    assert scale["backbone.patch_embed.proj.weight"] < scale["backbone.blocks.11.mlp.fc1.weight"]
    assert scale["backbone.blocks.11.mlp.fc1.weight"] < scale["head.weight"] == 1.0
    assert TrainConfig(layer_decay=0.65).layer_decay == 0.65


@pytest.mark.parametrize("backbone", [VIT, "tf_efficientnet_lite0"])
def test_grad_cam_explains_transformers_and_cnns(backbone):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, pretrained="none"), 6, 2, (64, 64))
    torch.nn.init.normal_(model.head.weight, std=0.5)
    images = torch.zeros(2, 1, 64, 64)
    images[:, :, 16:32, 8:40] = 1.0  # a bright band
    cams = grad_cam(model, images, torch.zeros(2, 4), label=2)
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1


def test_report_builds_for_a_vit_backbone_on_the_tiny_preset(tmp_path):
    """The whole pipeline with a ViT (1-channel scans, Grad-CAM on tokens) in a scratch copy."""
    import os
    import subprocess
    import sys

    import yaml

    from test_pipeline import REPO, TINY, merge

    vit = {"model": {"backbone": VIT, "pretrained": "none"}, "tracking": {"enabled": False}}
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), {**TINY, **vit})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "preprocess", "split", "train", "evaluate", "report"):
        done = subprocess.run(
            [sys.executable, "-m", "olives", "stage", stage],
            cwd=tmp_path,
            env=os.environ,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{stage}: {done.stderr[-2000:]}"
    report = (tmp_path / "reports/report.md").read_text()
    assert f"`{VIT}`" in report and "Grad-CAM of that biomarker's logit" in report
    gallery = sorted(p.name for p in (tmp_path / "reports/figures/report").glob("*.png"))
    assert gallery == sorted(
        [f"B{i}_errors.png" for i in range(1, 7)] + ["pr.png", "reliability.png", "roc.png"]
    )
    assert "test volumes (patient x eye x visit)" in report
