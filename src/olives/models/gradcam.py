"""Grad-CAM for one biomarker logit of `BiomarkerNet`, through the `grad-cam` package
(pytorch-grad-cam), for CNNs and transformers alike.

The full model (grey input, fusion, head) runs unchanged with the scan's clinical values, so a
map explains the real logit. The target layer is the backbone's last feature stage (timm's
`feature_info`); for ViT-family backbones (ViT, EVA, DeiT, RETFound) it is the input norm of the
last block, because a class-token model's last block output carries no gradient to the patch
tokens. Token or channels-last activations are reshaped to [B, C, h, w] first. A map is
all-zero when no activation supports a positive logit; `empty_reason` says so in words.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

Reshape = Callable[[torch.Tensor], torch.Tensor]


class _ImageOnly(nn.Module):
    """The model as a function of the images alone, the clinical values held fixed."""

    def __init__(self, model: nn.Module, clinical: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.clinical = clinical

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.clinical)


def target_layer(backbone: nn.Module) -> tuple[nn.Module, Reshape | None]:
    """The layer to explain and how to turn its output into [B, C, h, w]."""
    blocks = getattr(backbone, "blocks", None)
    patch_embed = getattr(backbone, "patch_embed", None)
    if blocks is not None and patch_embed is not None and hasattr(blocks[-1], "norm1"):
        grid = tuple(patch_embed.grid_size)
        prefix = int(getattr(backbone, "num_prefix_tokens", 1))
        return blocks[-1].norm1, lambda t: _tokens_to_map(t, grid, prefix)
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ValueError(f"{type(backbone).__name__} has no feature_info: not a timm backbone")
    last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
    channels = int(last["num_chs"])
    return backbone.get_submodule(last["module"]), lambda t: _channels_first(t, channels)


def _tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    patches = tokens[:, prefix : prefix + grid[0] * grid[1]]
    return patches.reshape(tokens.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)


def _channels_first(features: torch.Tensor, channels: int) -> torch.Tensor:
    if features.dim() == 4 and features.shape[1] != channels and features.shape[-1] == channels:
        return features.permute(0, 3, 1, 2)  # NHWC stages (Swin)
    return features


def grad_cam(
    model: nn.Module, images: torch.Tensor, clinical: torch.Tensor | None, label: int
) -> np.ndarray:
    """Maps [B, H, W] in [0, 1] (min-max scaled per scan by grad-cam) for logit `label`, at
    the size of `images` [B, 1, H, W]; all-zero where nothing supports a positive logit."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError("model has no image backbone (fusion 'clinical'): no Grad-CAM possible")
    num_labels = getattr(model, "num_labels", None)
    if num_labels is not None and not 0 <= label < num_labels:
        raise ValueError(f"label index {label} out of range for {num_labels} labels")
    model.eval()
    layer, reshape = target_layer(backbone)
    wrapped = _ImageOnly(model, clinical)
    with GradCAM(model=wrapped, target_layers=[layer], reshape_transform=reshape) as cam:
        maps = cam(
            input_tensor=images.detach().float(),
            targets=[ClassifierOutputTarget(label)] * len(images),
        )
    return np.clip(np.nan_to_num(maps), 0.0, 1.0)


def empty_reason(cam: np.ndarray | None, backbone: bool = True) -> str | None:
    """Why an overlay shows no heat, in words (None when it shows some)."""
    if not backbone:
        return "the model uses clinical values only: no image feeds the logit"
    if cam is None or not np.any(cam > 0):
        return "no image region supports a positive logit (Grad-CAM is zero everywhere)"
    return None


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
