"""Image backbone fused with clinical values (BCVA, CST): one logit per biomarker.

`model.fusion` picks the architecture:

- `image`: backbone -> dropout -> linear; no clinical branch at all.
- `clinical`: clinical MLP -> dropout -> linear; the backbone is never built.
- `concat`: late fusion, [image embedding, clinical embedding] -> dropout -> linear.
- `film`: the clinical embedding gives a per-feature scale and shift of the pooled image
  embedding (FiLM, Perez et al. 2018), initialised to the identity so training starts from the
  image-only model.

Clinical input: the caller standardises the values and appends their 0/1 missing indicators, so
the model sees `2 * num_clinical` features. Images: see the grey-input policy in `backbone.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from olives.config import ConfigError, ModelConfig
from olives.models.backbone import GreyInput, backbone_input, create_backbone


class ClinicalMLP(nn.Module):
    """Two small layers: standardised values + missing flags -> embedding."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
        )

    def forward(self, clinical: torch.Tensor) -> torch.Tensor:
        return self.net(clinical)


class FiLM(nn.Module):
    """features * (1 + scale(c)) + shift(c); zero-initialised, so it starts as the identity."""

    def __init__(self, cond_features: int, num_features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_features, 2 * num_features)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(cond).chunk(2, dim=1)
        return features * (1 + scale) + shift


class BiomarkerNet(nn.Module):
    """forward(images [B,1,H,W] in [0,1], clinical [B, 2*num_clinical]) -> logits [B, L]."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_labels: int,
        num_clinical: int,
        backbone: nn.Module | None,
        data_config: dict[str, Any],
        img_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.num_clinical = num_clinical
        self.data_config = dict(data_config)
        self.img_size = tuple(img_size) if img_size else None
        self.backbone = backbone
        self.grey = (
            GreyInput(data_config["mean"], data_config["std"]) if backbone is not None else None
        )
        uses_clinical = cfg.fusion != "image"
        self.clinical_mlp = (
            ClinicalMLP(2 * num_clinical, cfg.clinical_hidden) if uses_clinical else None
        )
        image_features = int(backbone.num_features) if backbone is not None else 0
        self.film = FiLM(cfg.clinical_hidden, image_features) if cfg.fusion == "film" else None
        head_in = image_features  # 0 without a backbone
        head_in += cfg.clinical_hidden if cfg.fusion in ("clinical", "concat") else 0
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(head_in, num_labels)
        # Zero head: initial logits equal the bias exactly (see `init_head_bias`), so the
        # trainer's initial-loss check is exact; the head still gets gradients at step one.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, images: torch.Tensor | None, clinical: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = []
        clin_emb = self._clinical_embedding(clinical) if self.clinical_mlp is not None else None
        image_emb = self._image_embedding(images) if self.backbone is not None else None
        if self.film is not None:
            parts.append(self.film(image_emb, clin_emb))
        else:
            parts.extend(e for e in (image_emb, clin_emb) if e is not None)
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.head(self.dropout(features))

    def _image_embedding(self, images: torch.Tensor | None) -> torch.Tensor:
        if images is None:
            raise ValueError(f"model.fusion='{self.cfg.fusion}' needs images, got None")
        return self.backbone(backbone_input(self.grey(images), self.backbone))

    def _clinical_embedding(self, clinical: torch.Tensor | None) -> torch.Tensor:
        want = 2 * self.num_clinical
        if clinical is None or clinical.dim() != 2 or clinical.shape[1] != want:
            got = None if clinical is None else tuple(clinical.shape)
            raise ValueError(f"clinical must be [B, {want}] (values + missing flags), got {got}")
        return self.clinical_mlp(clinical.to(self.head.weight.dtype))

    @torch.no_grad()
    def init_head_bias(self, prevalence: np.ndarray) -> None:
        """Set the head bias to logit(prevalence), so initial predictions equal the base rates."""
        p = np.asarray(prevalence, dtype=np.float64)
        if p.shape != (self.num_labels,) or not np.all(np.isfinite(p)):
            raise ValueError(f"prevalence must be {self.num_labels} finite values, got {p!r}")
        p = np.clip(p, 1e-4, 1 - 1e-4)
        bias = torch.as_tensor(np.log(p / (1 - p)), dtype=self.head.bias.dtype)
        self.head.bias.copy_(bias.to(self.head.bias.device))

    def describe(self) -> dict[str, Any]:
        """Everything `model_from_description` needs to rebuild this architecture."""
        return {
            "model": dataclasses.asdict(self.cfg),
            "num_labels": self.num_labels,
            "num_clinical": self.num_clinical,
            "data_config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()
            },
            "img_size": list(self.img_size) if self.img_size else None,
        }

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's layer groups under `backbone.`, for timm's layer-wise lr decay
        (`train.layer_decay`); fusion and head parameters fall in the last group."""
        inner = self.backbone.group_matcher(coarse) if self.backbone is not None else {}
        return {name: _prefixed(rule) for name, rule in inner.items()}

    def no_weight_decay(self) -> set[str]:
        skip = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{name}" for name in skip()} if callable(skip) else set()


def _prefixed(rule: Any) -> Any:
    """A timm group-matcher rule (a regex, or a list of (regex, order)) under `backbone.`."""
    if isinstance(rule, str):
        return _under_backbone(rule)
    return [(_under_backbone(regex), order) for regex, order in rule]


def _under_backbone(regex: str) -> str:
    alternatives = "|".join(part.removeprefix("^") for part in regex.split("|"))
    return rf"^backbone\.(?:{alternatives})"


def build_model(
    cfg: ModelConfig,
    num_labels: int,
    num_clinical: int,
    img_size: tuple[int, int] | None = None,
) -> BiomarkerNet:
    """The configured model; the backbone (and its weights) only when images are used.
    `img_size` (H, W) is the training size, for the backbones built for one size (ViT ...)."""
    _check(cfg, num_labels, num_clinical)
    if cfg.fusion == "clinical":
        return BiomarkerNet(cfg, num_labels, num_clinical, None, {})
    backbone, data_config = create_backbone(cfg.backbone, cfg.pretrained, cfg.drop_path, img_size)
    return BiomarkerNet(cfg, num_labels, num_clinical, backbone, data_config, img_size)


def model_from_description(description: dict[str, Any]) -> BiomarkerNet:
    """Rebuild the architecture of `describe()` with random weights (load a state dict next)."""
    cfg = dataclasses.replace(ModelConfig(**description["model"]), pretrained="none")
    num_labels, num_clinical = description["num_labels"], description["num_clinical"]
    _check(cfg, num_labels, num_clinical)
    if cfg.fusion == "clinical":
        return BiomarkerNet(cfg, num_labels, num_clinical, None, {})
    img_size = description.get("img_size")
    img_size = tuple(img_size) if img_size else None
    backbone, _ = create_backbone(cfg.backbone, "none", cfg.drop_path, img_size)
    data_config = {
        k: tuple(v) if isinstance(v, list) else v for k, v in description["data_config"].items()
    }
    return BiomarkerNet(cfg, num_labels, num_clinical, backbone, data_config, img_size)


def _check(cfg: ModelConfig, num_labels: int, num_clinical: int) -> None:
    if num_labels < 1:
        raise ConfigError(f"need at least one label, got num_labels={num_labels}")
    if num_clinical < 0:
        raise ConfigError(f"num_clinical must be >= 0, got {num_clinical}")
    if num_clinical == 0 and cfg.fusion != "image":
        raise ConfigError(
            f"'model.fusion' = {cfg.fusion!r} needs clinical columns, but none are configured; "
            "use model.fusion='image'"
        )
    if cfg.clinical_hidden < 1:
        raise ConfigError(f"'model.clinical_hidden' = {cfg.clinical_hidden} must be >= 1")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"'model.dropout' = {cfg.dropout} must be in [0, 1)")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise ConfigError(f"'model.drop_path' = {cfg.drop_path} must be in [0, 1)")
