"""Grad-CAM (Selvaraju et al. 2017) for one biomarker logit of `BiomarkerNet`.

The target is the backbone's last feature map: timm models compute
`forward(x) = forward_head(forward_features(x))`, so `forward_features` is wrapped on the
instance for one forward pass to capture its output. The full model (grey input, fusion, head)
runs unchanged, hence the map explains the real logit, clinical branch included. Grad-CAM
needs a spatial map: a backbone whose features are not [B, C, h, w] (e.g. ViT tokens) is
rejected with a clear error, as is the image-less `clinical` fusion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def capture_features(backbone: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of `backbone.forward_features` under key 'features' while active."""
    if not callable(getattr(backbone, "forward_features", None)):
        raise ValueError(
            f"backbone {type(backbone).__name__} has no forward_features: "
            "Grad-CAM needs a timm-style backbone"
        )
    store: dict[str, torch.Tensor] = {}
    own = vars(backbone).get("forward_features")  # an instance attribute to restore, if any
    original = backbone.forward_features

    def wrapped(*args: object, **kwargs: object) -> torch.Tensor:
        store["features"] = original(*args, **kwargs)
        return store["features"]

    backbone.forward_features = wrapped
    try:
        yield store
    finally:
        if own is None:
            del backbone.forward_features
        else:
            backbone.forward_features = own


def grad_cam(
    model: nn.Module, images: torch.Tensor, clinical: torch.Tensor | None, label: int
) -> np.ndarray:
    """Maps [B, H, W] in [0, 1] (each scaled by its own maximum; all-zero when no activation
    supports the logit) for logit `label`, at the size of `images` [B, 1, H, W]."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError("model has no image backbone (fusion 'clinical'): no Grad-CAM possible")
    num_labels = getattr(model, "num_labels", None)
    if num_labels is not None and not 0 <= label < num_labels:
        raise ValueError(f"label index {label} out of range for {num_labels} labels")
    model.eval()
    # A leaf that requires grad keeps the graph alive even if the weights are frozen.
    x = images.detach().float().clone().requires_grad_(True)
    with torch.enable_grad(), capture_features(backbone) as store:
        logits = model(x, clinical)
    features = store["features"]
    if features.dim() != 4:
        raise ValueError(
            f"Grad-CAM needs a [B, C, h, w] feature map, the backbone gives {tuple(features.shape)}"
        )
    (grads,) = torch.autograd.grad(logits[:, label].sum(), features)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)  # one weight per channel
    cam = torch.relu((weights * features.float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam[:, 0].clamp_min(0)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    return cam.detach().cpu().numpy().clip(0.0, 1.0)


def overlay(
    image: np.ndarray, cam: np.ndarray | None, alpha: float = 0.6, cmap: str = "jet"
) -> np.ndarray:
    """RGB float [H, W, 3] in [0, 1]: the grey image blended with the coloured map, the blend
    weight growing with the map (so unsupported regions keep their plain grey); just the grey
    image when `cam` is None. `image` is uint8 or float in [0, 1]."""
    grey = np.asarray(image, dtype=np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        grey = grey / 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if cam is None:
        return rgb.clip(0.0, 1.0)
    if cam.shape != grey.shape:
        raise ValueError(f"cam has shape {cam.shape}, the image has shape {grey.shape}")
    cam = np.clip(cam, 0.0, 1.0)
    heat = matplotlib.colormaps[cmap](cam)[..., :3]
    weight = alpha * np.sqrt(cam)[..., None]  # sqrt: moderate support stays visible
    return ((1 - weight) * rgb + weight * heat).clip(0.0, 1.0)
