"""Backbones, offline ImageNet weights, grey-input policy and fusion models."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from olives.config import ConfigError, ModelConfig
from olives.models import (
    BiomarkerNet,
    GreyInput,
    WeightsUnavailableError,
    build_model,
    create_backbone,
    create_imagenet_model,
    model_from_description,
)
from olives.models.weights import map_efficientnet_pytorch_keys, package_weights_path

TINY = "test_efficientnet"  # timm's 0.1 M-parameter test model: fast fusion tests
CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger, Persian, Siamese, Egyptian cat


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(backbone=TINY, pretrained="none", clinical_hidden=8, **kw)


@pytest.fixture(scope="module")
def lite0() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model, data_config = create_imagenet_model("tf_efficientnet_lite0", "package")
    return model.eval(), data_config


def test_package_weights_rank_a_cat_first_on_chelsea(lite0) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    model, data_config = lite0
    assert data_config["mean"] == data_config["std"] == (0.5, 0.5, 0.5)
    assert data_config["interpolation"] == "bicubic"
    assert data_config["input_size"] == (3, 224, 224)
    rgb = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(rgb, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        probs = model((x - 0.5) / 0.5).softmax(dim=1)[0]
    top = probs.topk(5)
    print(
        "chelsea top-5:",
        [(i, round(v, 3)) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)],
    )
    assert top.indices[0].item() in CAT_CLASSES
    assert top.values[0].item() > 0.5


def test_key_mapping_loads_every_tensor_unchanged(lite0) -> None:
    model, _ = lite0
    source = torch.load(package_weights_path("tf_efficientnet_lite0"), weights_only=True)
    mapped = map_efficientnet_pytorch_keys(source, [len(s) for s in model.blocks])
    target = model.state_dict()
    assert set(mapped) == set(target) and len(mapped) == len(source)
    for key, value in mapped.items():
        torch.testing.assert_close(target[key], value, rtol=0, atol=0)


def test_key_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(WeightsUnavailableError, match=r"_blocks.0._se_reduce"):
        map_efficientnet_pytorch_keys({"_blocks.0._se_reduce.weight": torch.zeros(1)}, [1])


def test_backbone_returns_pooled_features(lite0) -> None:
    backbone, _ = create_backbone("tf_efficientnet_lite0", "package")
    assert backbone.num_classes == 0
    full, _ = lite0
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = backbone.eval()(x)
        torch.testing.assert_close(full(x), full.get_classifier()(features))
    assert features.shape == (1, 1280)


def test_package_is_only_for_lite_backbones() -> None:
    with pytest.raises(WeightsUnavailableError, match=r"model.pretrained='package'"):
        create_backbone(TINY, "package")


def test_file_weights_are_loaded(tmp_path) -> None:
    torch.manual_seed(1)
    source = timm.create_model(TINY)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    backbone, _ = create_backbone(TINY, f"file:{path}")
    torch.testing.assert_close(backbone.conv_stem.weight, source.conv_stem.weight)
    with pytest.raises(FileNotFoundError, match=r"missing.pth"):
        create_backbone(TINY, f"file:{tmp_path / 'missing.pth'}")


def test_hub_failure_names_offline_choices(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError, match=r"'package'.*'file:<path>'.*'none'"):
        create_backbone(TINY, "hub")


@pytest.mark.parametrize(
    ("name", "pretrained", "param"),
    [(TINY, "imagenet", "model.pretrained"), ("no_such_net", "none", "model.backbone")],
)
def test_bad_backbone_settings_name_the_parameter(name, pretrained, param) -> None:
    with pytest.raises(ConfigError, match=param):
        create_backbone(name, pretrained)


def test_grey_input_equals_grey_fed_as_rgb() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    grey = torch.rand(2, 1, 8, 8)
    rgb = grey.repeat(1, 3, 1, 1)
    expected = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(GreyInput(mean, std)(grey), expected)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        GreyInput(mean, std)(rgb)


@pytest.mark.parametrize("fusion", ["image", "clinical", "concat", "film"])
def test_fusion_shapes_and_branches(fusion) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(fusion=fusion), num_labels=6, num_clinical=2).eval()
    logits = model(torch.rand(3, 1, 32, 32), torch.randn(3, 4))
    assert logits.shape == (3, 6) and torch.isfinite(logits).all()
    assert (model.backbone is None) == (fusion == "clinical")
    assert (model.clinical_mlp is None) == (fusion == "image")
    if fusion == "clinical":
        assert model(None, torch.randn(3, 4)).shape == (3, 6)


def test_film_starts_as_identity_and_concat_uses_clinical() -> None:
    torch.manual_seed(0)
    images, clin_a, clin_b = torch.rand(2, 1, 32, 32), torch.randn(2, 4), torch.randn(2, 4)
    for fusion, depends in (("film", False), ("concat", True)):
        model = build_model(tiny_cfg(fusion=fusion), 6, 2).eval()
        torch.nn.init.normal_(model.head.weight)
        with torch.no_grad():
            same = torch.allclose(model(images, clin_a), model(images, clin_b))
        assert same is not depends, fusion


def test_no_clinical_columns_needs_image_fusion() -> None:
    for fusion in ("clinical", "concat", "film"):
        with pytest.raises(ConfigError, match=r"model.fusion"):
            build_model(tiny_cfg(fusion=fusion), 6, 0)
    model = build_model(tiny_cfg(fusion="image"), 6, 0).eval()
    assert model(torch.rand(1, 1, 32, 32), None).shape == (1, 6)


def test_clinical_width_is_checked() -> None:
    model = build_model(tiny_cfg(fusion="concat"), 6, 2)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        model(torch.rand(1, 1, 32, 32), torch.randn(1, 2))


def test_init_head_bias_gives_prevalence() -> None:
    prevalence = np.array([0.05, 0.3, 0.5, 0.7, 0.01, 0.9])
    model = build_model(tiny_cfg(fusion="concat"), 6, 2).train()
    model.init_head_bias(prevalence)
    probs = torch.sigmoid(model(torch.rand(4, 1, 32, 32), torch.randn(4, 4)))
    torch.testing.assert_close(probs, torch.tensor(prevalence).float().expand(4, -1))
    with pytest.raises(ValueError, match=r"6 finite values"):
        model.init_head_bias(prevalence[:3])


def test_describe_rebuilds_the_same_model() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(fusion="film", dropout=0.1), 6, 2).eval()
    torch.nn.init.normal_(model.head.weight)
    description = json.loads(json.dumps(model.describe()))
    assert description["model"]["backbone"] == TINY and description["num_clinical"] == 2
    rebuilt = model_from_description(description).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    images, clinical = torch.rand(2, 1, 32, 32), torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, clinical), model(images, clinical))
    assert rebuilt.data_config == model.data_config


def test_channels_last_and_autocast_match_float32() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(fusion="concat"), 6, 2).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    images, clinical = torch.rand(2, 1, 32, 32), torch.randn(2, 4)
    with torch.no_grad():
        reference = model(images, clinical)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(images, clinical), reference, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images, clinical)
    torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)


def test_the_model_and_the_contrastive_encoder_feed_the_backbone_its_memory_format() -> None:
    """Once the loop makes the weights channels-last (on CUDA), the supervised model and the
    pre-training encoder both hand the stem a channels-last input; before, plain NCHW."""
    from olives.models.backbone import create_backbone
    from olives.training.pretrain import Encoder

    backbone, data_config = create_backbone("tf_efficientnet_lite0", "none", 0.0, (32, 32))
    nets = {
        "model": build_model(tiny_cfg(fusion="image"), 6, 0).eval(),
        "encoder": Encoder(backbone, data_config, 16).eval(),
    }
    for name, net in nets.items():
        seen: list[bool] = []
        stem = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        stem.register_forward_pre_hook(
            lambda _, args, seen=seen: seen.append(
                args[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
        with torch.no_grad():
            net(torch.rand(2, 1, 32, 32))
            net.to(memory_format=torch.channels_last)(torch.rand(2, 1, 32, 32))
        assert seen == [False, True], name


def test_drop_path_and_bad_values_reach_the_model() -> None:
    model = build_model(tiny_cfg(fusion="image", drop_path=0.2), 6, 0)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) > 0
    for field, value in (("dropout", 1.0), ("clinical_hidden", 0), ("drop_path", -0.1)):
        cfg = dataclasses.replace(tiny_cfg(fusion="concat"), **{field: value})
        with pytest.raises(ConfigError, match=rf"model.{field}"):
            build_model(cfg, 6, 2)


def test_biomarker_net_is_exported() -> None:
    assert isinstance(build_model(tiny_cfg(fusion="clinical"), 6, 2), BiomarkerNet)
