"""Whole-batch OCT augmentation: identity, determinism, flips, ranges and bounded changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from olives.config import AugmentConfig, ConfigError
from olives.training.augment import BatchAugment

OFF = AugmentConfig(
    hflip=0.0,
    vflip=0.0,
    max_shift=0.0,
    max_rotate_deg=0.0,
    scale=(1.0, 1.0),
    brightness=0.0,
    contrast=0.0,
    gamma=0.0,
    noise_std=0.0,
    speckle_std=0.0,
)


def only(**kw) -> BatchAugment:
    """Every augmentation off except the given ones."""
    return BatchAugment(dataclasses.replace(OFF, **kw))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(8, 1, 32, 40)


def layered() -> torch.Tensor:
    """A bright band in the top quarter (the retina's inner layers), dark below."""
    x = torch.full((8, 1, 32, 32), 0.1)
    x[:, :, 2:8, :] = 0.9
    return x


def test_disabled_is_identity(images) -> None:
    augment = BatchAugment(AugmentConfig(enabled=False))
    assert augment(images, gen()) is images
    torch.testing.assert_close(only()(images, gen()), images)


def test_same_seed_same_output(images) -> None:
    augment = BatchAugment(AugmentConfig())
    first, second = augment(images, gen(3)), augment(images, gen(3))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, augment(images, gen(4)))


def test_hflip_always_equals_torch_flip(images) -> None:
    torch.testing.assert_close(only(hflip=1.0)(images, gen()), images.flip(-1))
    torch.testing.assert_close(only(vflip=1.0)(images, gen()), images.flip(-2))


def test_hflip_half_flips_some_images_exactly(images) -> None:
    out = only(hflip=0.5)(torch.cat([images] * 4), gen(1))
    flipped = [
        torch.equal(o, i.flip(-1)) for o, i in zip(out, torch.cat([images] * 4), strict=True)
    ]
    kept = [torch.equal(o, i) for o, i in zip(out, torch.cat([images] * 4), strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(flipped)


def test_range_shape_and_dtype_are_preserved(images) -> None:
    strong = AugmentConfig(brightness=0.5, contrast=0.5, noise_std=0.3, speckle_std=0.5)
    for dtype in (torch.float32, torch.float64):
        out = BatchAugment(strong)(images.to(dtype), gen())
        assert out.shape == images.shape and out.dtype == dtype
        assert out.min() >= 0 and out.max() <= 1


def test_default_keeps_the_retina_upright() -> None:
    cfg = dataclasses.replace(AugmentConfig(), hflip=1.0)
    assert cfg.vflip == 0.0
    out = BatchAugment(cfg)(layered(), gen())
    top, bottom = out[:, :, :16].mean(dim=(1, 2, 3)), out[:, :, 16:].mean(dim=(1, 2, 3))
    assert (top > bottom + 0.15).all()
    flipped = only(vflip=1.0)(layered(), gen())
    assert (flipped[:, :, :16].mean(dim=(1, 2, 3)) < flipped[:, :, 16:].mean(dim=(1, 2, 3))).all()


def test_shift_only_moves_but_preserves_content() -> None:
    x = torch.zeros(8, 1, 64, 64)
    x[:, :, 16:48, 16:48] = 1.0  # a square well inside the frame
    out = only(max_shift=0.1)(x, gen())
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-4)
    assert not torch.equal(out, x)
    rows = (out[:, 0].sum(dim=2) * torch.arange(64.0)).sum(dim=1) / out[:, 0].sum(dim=(1, 2))
    assert ((rows - 31.5).abs() <= 0.1 * 64 + 1e-3).all()


def test_rotation_and_scale_keep_a_centred_disc() -> None:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 15**2).float().expand(4, 1, 64, 64)
    out = only(max_rotate_deg=30.0)(disc, gen())
    torch.testing.assert_close(out.mean(), disc.mean(), rtol=0.01, atol=0)
    zoomed = only(scale=(1.2, 1.2))(disc, gen())
    torch.testing.assert_close(zoomed.mean(), disc.mean() * 1.44, rtol=0.02, atol=0)


def test_intensity_and_noise_changes_are_bounded(images) -> None:
    flat = torch.full((16, 1, 32, 32), 0.5)
    out = only(brightness=0.1)(flat, gen())
    assert ((out - 0.5).abs() <= 0.1 + 1e-6).all() and out.std(dim=(1, 2, 3)).max() < 1e-6
    noisy = only(noise_std=0.02)(flat, gen())
    assert abs(noisy.std().item() - 0.02) < 0.002 and abs(noisy.mean().item() - 0.5) < 0.002
    speckled = only(speckle_std=0.1)(flat, gen())
    assert abs(speckled.std().item() - 0.05) < 0.005 and abs(speckled.mean().item() - 0.5) < 0.005


@pytest.mark.parametrize(
    ("field", "value"),
    [("hflip", 1.5), ("max_shift", -0.1), ("scale", (1.1, 0.9)), ("noise_std", -1.0)],
)
def test_bad_settings_name_the_parameter(field, value) -> None:
    with pytest.raises(ConfigError, match=rf"train\.augment\.{field}"):
        BatchAugment(dataclasses.replace(AugmentConfig(), **{field: value}))


def test_generator_on_another_device_is_refused(images) -> None:
    meta = images.to("meta")
    with pytest.raises(ValueError, match="generator is on cpu, the images on meta"):
        BatchAugment(AugmentConfig())(meta, gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_draw_on_the_gpu(images) -> None:  # pragma: no cover
    augment = BatchAugment(AugmentConfig())
    on_gpu = images.cuda()

    def cuda_gen(seed: int) -> torch.Generator:
        return torch.Generator(device="cuda").manual_seed(seed)

    out = augment(on_gpu, cuda_gen(5))
    torch.testing.assert_close(out, augment(on_gpu, cuda_gen(5)), rtol=0, atol=0)
    assert out.device.type == "cuda" and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(only(hflip=1.0)(on_gpu, cuda_gen(1)), on_gpu.flip(-1))
