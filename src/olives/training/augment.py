"""Whole-batch OCT augmentation on tensors (CPU or GPU): no per-image loop, no PIL.

Order: horizontal/vertical flip -> one affine resample (shift, rotation, scale) -> gamma,
contrast, brightness -> multiplicative speckle and additive Gaussian noise -> clamp to [0, 1].
Vertical flips default to off: a B-scan has a physical up/down (vitreous above, choroid below).

Randomness: every draw (per-image parameters, pixel noise) comes from the caller's
`torch.Generator`, which lives on the batch's device: on a GPU the random numbers are made there
and the host never waits for them. The output is a function of the generator's state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from olives.config import AugmentConfig, ConfigError

# Columns of the per-image parameter table (all uniform in [0, 1), always drawn, in this order).
HFLIP, VFLIP, SHIFT_X, SHIFT_Y, ROTATE, SCALE, BRIGHTNESS, CONTRAST, GAMMA = range(9)
NUM_PARAMS = 9


class BatchAugment(nn.Module):
    """forward(images [B, 1, H, W] float in [0, 1], generator) -> augmented batch, same shape."""

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        _check(cfg)
        self.cfg = cfg

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.cfg.enabled:
            return images
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a float [B, C, H, W] batch, got {images.shape}")
        if not same_device(generator.device, images.device):
            raise ValueError(
                f"the generator is on {generator.device}, the images on {images.device}: "
                "make the generator on the batch's device"
            )
        u = torch.rand(images.shape[0], NUM_PARAMS, generator=generator, device=images.device)
        x = self._flip(images.float(), u)
        x = self._affine(x, u)
        x = self._intensity(x, u)
        x = self._noise(x, generator)
        return x.clamp(0.0, 1.0).to(images.dtype)

    def _flip(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        for column, prob, dim in ((HFLIP, self.cfg.hflip, -1), (VFLIP, self.cfg.vflip, -2)):
            if prob > 0:
                x = torch.where((u[:, column] < prob).view(-1, 1, 1, 1), x.flip(dim), x)
        return x

    def _affine(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        lo, hi = cfg.scale
        if cfg.max_shift == 0 and cfg.max_rotate_deg == 0 and lo == hi == 1:
            return x
        height, width = x.shape[-2:]
        angle = torch.deg2rad((2 * u[:, ROTATE] - 1) * cfg.max_rotate_deg)
        scale = lo * (hi / lo) ** u[:, SCALE]  # log-uniform: zoom in and out equally likely
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # Output -> input map in normalised coords; rotation is done in pixel space (H != W).
        # A shift of `max_shift` of the size is 2 * max_shift in [-1, 1] coordinates.
        shift_x = (2 * u[:, SHIFT_X] - 1) * 2 * cfg.max_shift
        shift_y = (2 * u[:, SHIFT_Y] - 1) * 2 * cfg.max_shift
        row_x = torch.stack([cos, -sin * height / width, shift_x], dim=1)
        row_y = torch.stack([sin * width / height, cos, shift_y], dim=1)
        theta = torch.stack([row_x, row_y], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _intensity(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.gamma > 0:
            gamma = torch.exp((2 * u[:, GAMMA] - 1) * cfg.gamma).view(-1, 1, 1, 1)
            x = x.clamp(0.0, 1.0) ** gamma
        if cfg.contrast > 0:
            factor = (1 + (2 * u[:, CONTRAST] - 1) * cfg.contrast).view(-1, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * factor + mean
        if cfg.brightness > 0:
            x = x + ((2 * u[:, BRIGHTNESS] - 1) * cfg.brightness).view(-1, 1, 1, 1)
        return x

    def _noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if cfg.speckle_std == 0 and cfg.noise_std == 0:
            return x
        z = torch.randn((2, *x.shape), generator=generator, device=x.device)
        x = x.clamp(0.0, 1.0)
        if cfg.speckle_std > 0:
            # Log-normal with mean 1 and standard deviation `speckle_std`.
            sigma = math.sqrt(math.log1p(cfg.speckle_std**2))
            x = x * torch.exp(sigma * z[0] - sigma**2 / 2)
        if cfg.noise_std > 0:
            x = x + cfg.noise_std * z[1]
        return x


def same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' are the same device when the current device is 0."""

    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and (a.type != "cuda" or index(a) == index(b))


def _check(cfg: AugmentConfig) -> None:
    """Raise `ConfigError` naming the first out-of-range `train.augment.*` value."""
    lo, hi = cfg.scale
    rules = [
        ("hflip", 0 <= cfg.hflip <= 1, "in [0, 1]"),
        ("vflip", 0 <= cfg.vflip <= 1, "in [0, 1]"),
        ("max_shift", 0 <= cfg.max_shift <= 0.5, "in [0, 0.5]"),
        ("max_rotate_deg", 0 <= cfg.max_rotate_deg <= 180, "in [0, 180]"),
        ("scale", 0 < lo <= hi, "two numbers with 0 < low <= high"),
        ("brightness", 0 <= cfg.brightness < 1, "in [0, 1)"),
        ("contrast", 0 <= cfg.contrast < 1, "in [0, 1)"),
        ("gamma", 0 <= cfg.gamma <= 1, "in [0, 1]"),
        ("noise_std", cfg.noise_std >= 0, ">= 0"),
        ("speckle_std", cfg.speckle_std >= 0, ">= 0"),
    ]
    for name, ok, want in rules:
        if not ok:
            value = getattr(cfg, name)
            raise ConfigError(f"'train.augment.{name}' = {value!r} must be {want}")
