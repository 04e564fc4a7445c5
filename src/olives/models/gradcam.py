"""Grad-CAM for one biomarker logit of `BiomarkerNet`, through the `grad-cam` package
(pytorch-grad-cam), for CNNs and transformers alike.

The full model (grey input, fusion, head) runs unchanged with the scan's clinical values, so a
map explains the real logit. The target layer is the backbone's last feature stage (timm's
`feature_info`); for ViT-family backbones (ViT, EVA, DeiT, RETFound) it is the input norm of the
last block, because a class-token model's last block output carries no gradient to the patch
tokens. Token or channels-last activations are reshaped to [B, C, h, w] first. A map is
all-zero when no activation supports a positive logit; `empty_reason` says so in words.

`overlay` blends a map onto its image (the report's gallery); `scan_view` and
`annotated_overlay` draw what `olives predict --gradcam` writes: the scan at its own aspect
ratio under a title strip naming the biomarker, its probability, threshold and decision.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image
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


def explained_layers(model: nn.Module) -> tuple[list[nn.Module], Reshape | None]:
    """The layers Grad-CAM explains: the backbone's last stage; for an ensemble
    (`models.ensemble.EnsembleNet`), every member's, so the map is the mean of the members'
    maps of the ensemble's own logit (grad-cam averages the layers' min-max scaled maps),
    not member 0's. Members of another architecture than member 0's are left out: one
    reshape serves every layer."""
    members = getattr(model, "members", None)
    owners = list(members) if members is not None else [model]
    backbones = [b for b in (getattr(m, "backbone", None) for m in owners) if b is not None]
    if not backbones:
        raise ValueError("model has no image backbone (fusion 'clinical'): no Grad-CAM possible")
    same = [b for b in backbones if type(b) is type(backbones[0])]
    found = [target_layer(b) for b in same]
    return [layer for layer, _ in found], found[0][1]


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
    layers, reshape = explained_layers(model)
    num_labels = getattr(model, "num_labels", None)
    if num_labels is not None and not 0 <= label < num_labels:
        raise ValueError(f"label index {label} out of range for {num_labels} labels")
    model.eval()
    # A single logit's gradient through the backbone is tiny: without flushing subnormal floats
    # to zero, x86 CPUs took 6.5 s instead of 0.06 s per 4 scans (the report's gallery).
    torch.set_flush_denormal(True)
    wrapped = _ImageOnly(model, clinical)
    with GradCAM(model=wrapped, target_layers=layers, reshape_transform=reshape) as cam:
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


def scan_view(
    image: np.ndarray,
    cam: np.ndarray,
    shape: tuple[int, int],
    policy: str = "stretch",
    sides: tuple[int, int] = (256, 768),
) -> tuple[np.ndarray, np.ndarray]:
    """The model-size `image` (uint8) and `cam` back at the aspect ratio of the scan they came
    from (`shape`, its decoded height x width, resized by `policy`), with the longest side
    brought into `sides`: a 496 x 768 B-scan is not shown squashed to the model's square.
    With `pad`, the padding is cut off; with `crop`, what is shown is the centre crop the model
    saw, at that crop's own proportions."""
    rows, cols, seen = _seen_region(shape, image.shape[:2], policy)
    height, width = _display_shape(seen, sides)
    grey = Image.fromarray(np.ascontiguousarray(image[rows, cols]))
    heat = Image.fromarray(np.ascontiguousarray(cam[rows, cols], dtype=np.float32))
    return (
        np.asarray(grey.resize((width, height), Image.BILINEAR)),
        np.asarray(heat.resize((width, height), Image.BILINEAR)).clip(0.0, 1.0),
    )


def _seen_region(
    shape: tuple[int, int], size: tuple[int, int], policy: str
) -> tuple[slice, slice, tuple[int, int]]:
    """The rows and columns of the model image that hold the scan, and their shape in the
    scan's pixels: the geometry of `olives.data.decode.resize`, inverted."""
    h, w = shape
    height, width = size
    if policy == "stretch":
        return slice(None), slice(None), (h, w)
    scale = (min if policy == "pad" else max)(height / h, width / w)
    if policy == "crop":
        return slice(None), slice(None), (round(height / scale), round(width / scale))
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return slice(top, top + new_h), slice(left, left + new_w), (h, w)


def _display_shape(shape: tuple[int, int], sides: tuple[int, int]) -> tuple[int, int]:
    """`shape` scaled (proportions kept) so that its longest side lies within `sides`."""
    low, high = sides
    longest = max(shape)
    scale = min(high / longest, max(1.0, low / longest))
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def annotated_overlay(
    image: np.ndarray, cam: np.ndarray | None, lines: Sequence[str], min_width: int = 320
) -> np.ndarray:
    """RGB uint8: a white title strip holding `lines` (the first in bold) above `overlay(image,
    cam)`, never on the scan itself. The strip is at least `min_width` wide so that the text
    stays readable on a narrow scan (which is then centred on white)."""
    picture = (overlay(image, cam) * 255).round().astype(np.uint8)
    height, width = picture.shape[:2]
    total = max(width, min_width)
    left = (total - width) // 2
    body = np.full((height, total, 3), 255, dtype=np.uint8)
    body[:, left : left + width] = picture
    return np.concatenate([title_strip(lines, total), body], axis=0)


def title_strip(lines: Sequence[str], width: int, dpi: int = 100) -> np.ndarray:
    """RGB uint8 [h, width, 3]: `lines` in black on white, wrapped to `width`, the first bold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    font = min(18.0, max(11.0, width / 24))  # pixels
    chars = max(10, int(width / (0.6 * font)))
    wrapped = [
        (part, i == 0) for i, line in enumerate(lines) for part in textwrap.wrap(line, chars)
    ]
    step = 1.45 * font
    height = round(len(wrapped) * step + font)
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    for k, (text, bold) in enumerate(wrapped):
        y = 1 - (0.5 * font + (k + 0.5) * step) / height
        weight = "bold" if bold else "normal"
        size = font * 72 / dpi
        figure.text(0.5, y, text, ha="center", va="center", fontsize=size, fontweight=weight)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((height, width, 3), 255, dtype=np.uint8)  # Agg may round a side by a pixel
    rows, cols = min(height, drawn.shape[0]), min(width, drawn.shape[1])
    out[:rows, :cols] = drawn[:rows, :cols]
    return out
