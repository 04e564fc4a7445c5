"""Test-time augmentation (`evaluate.tta`, `olives predict --tta`): the mean logit over views,
checked against the model run by hand on each flipped or shifted batch."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import test_predict
from conftest import write_tiny_cache
from olives.cli import main
from olives.config import ConfigError, Params, from_dict, load_params
from olives.data.loader import BatchSource, SplitData, load_splits
from olives.models import ModelBundle
from olives.models.inference import predict_logits, shift_width, tta_views, view_logits
from olives.runtime import Runtime
from olives.stages import evaluate

CPU = Runtime(torch.device("cpu"))
model_dir = test_predict.model_dir  # the fixture: a tiny concat model on disk
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
STATS = {
    "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
    "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
}


class WhereNet(nn.Module):
    """A model that sees where things are (no pooling): a flip or shift changes its logits."""

    def __init__(self, height: int, width: int, labels: int = 3, clinical: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2 * (height - 2) * (width - 2) + clinical, labels)

    def forward(self, images: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.conv(images).flatten(1), clinical], dim=1))


def split(n: int = 10, height: int = 12, width: int = 40, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, height, width), dtype=np.uint8)
    clinical = rng.normal(size=(n, 4)).astype(np.float32)
    return SplitData(images, np.arange(n), np.zeros((n, 3), np.float32), clinical, pd.DataFrame())


def by_hand(model: nn.Module, data: SplitData, views: tuple[str, ...]) -> np.ndarray:
    """The mean logit over the identity and `views`, each view made with numpy."""
    x = data.images[:, None].astype(np.float32) / 255
    pixels = round(0.05 * x.shape[-1])
    pad = ((0, 0), (0, 0), (0, 0))
    batches = [x]
    if "hflip" in views:
        batches.append(x[..., ::-1])
    if "shift" in views:
        batches.append(np.pad(x, (*pad, (pixels, 0)))[..., : x.shape[-1]])  # content right
        batches.append(np.pad(x, (*pad, (0, pixels)))[..., pixels:])  # content left
    clinical = torch.from_numpy(data.clinical)
    with torch.no_grad():
        outs = [model(torch.from_numpy(b.copy()), clinical).numpy() for b in batches]
    return np.mean(outs, axis=0)


@pytest.fixture(scope="module")
def where_net() -> WhereNet:
    torch.manual_seed(0)
    return WhereNet(12, 40).eval()


@pytest.mark.parametrize("views", [("hflip",), ("shift",), ("hflip", "shift"), ("shift", "hflip")])
def test_tta_is_the_mean_logit_of_the_views_run_by_hand(where_net, views):
    data = split()
    got = predict_logits(where_net, BatchSource(data, CPU), CPU, 4, amp=False, tta=views)
    expected = by_hand(where_net, data, views)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    plain = by_hand(where_net, data, ())
    assert np.abs(expected - plain).max() > 1e-3  # the views do change this model's logits


def test_identity_only_is_exactly_no_tta(where_net):
    data = split()
    source = BatchSource(data, CPU)
    got = predict_logits(where_net, source, CPU, 4, amp=False, tta=())
    with torch.no_grad():
        plain = torch.cat(
            [where_net(b.images, b.clinical) for b in source.batches(np.arange(len(data)), 4)]
        )
    assert torch.equal(got, plain)
    batch = next(source.batches(np.arange(4), 4))
    with torch.no_grad():
        one = view_logits(where_net, batch.images, batch.clinical, tta_views((), 40), False, CPU)
        assert torch.equal(one, where_net(batch.images, batch.clinical))


def test_shift_moves_columns_and_fills_zeros():
    x = torch.arange(1, 6, dtype=torch.float32).view(1, 1, 1, 5)
    assert shift_width(x, 2).flatten().tolist() == [0, 0, 1, 2, 3]
    assert shift_width(x, -2).flatten().tolist() == [3, 4, 5, 0, 0]
    assert torch.equal(shift_width(x, 0), x)
    assert len(tta_views(("shift",), 8)) == 3  # identity, right, left (at least 1 pixel)
    assert tta_views(("shift",), 8)[1](x.expand(1, 1, 1, 5)).flatten().tolist()[0] == 0
    with pytest.raises(ValueError, match="vflip"):
        tta_views(("vflip",), 8)


def test_config_rejects_unknown_and_repeated_views(tmp_path):
    assert Params().evaluate.tta == ()
    assert from_dict(Params, {"evaluate": {"tta": ["hflip", "shift"]}}).evaluate.tta == (
        "hflip",
        "shift",
    )
    with pytest.raises(ConfigError) as unknown:
        from_dict(Params, {"evaluate": {"tta": ["hflip", "vflip"]}})
    assert str(unknown.value) == "'evaluate.tta[1]' = 'vflip' is not one of 'hflip', 'shift'"
    with pytest.raises(ConfigError, match=r"'evaluate.tta' = \['shift', 'shift'\] names a view"):
        from_dict(Params, {"evaluate": {"tta": ["shift", "shift"]}})
    with pytest.raises(ConfigError, match="is not tuple"):
        from_dict(Params, {"evaluate": {"tta": True}})
    path = tmp_path / "params.yaml"
    path.write_text("evaluate:\n  tta: [rotate]\n")
    with pytest.raises(ConfigError, match=r"params.yaml: 'evaluate.tta\[0\]' = 'rotate'"):
        load_params(path)


def test_predict_tta_averages_logits_before_calibration(model_dir, tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"scan{i}.png")
    out = tmp_path / "tta.csv"
    args = ["predict", str(folder), "--model", str(model_dir), "--out"]
    assert main([*args, str(out), "--tta", "hflip", "shift"]) == 0
    assert main([*args, str(tmp_path / "plain.csv")]) == 0
    with pytest.raises(SystemExit):
        main([*args, str(out), "--tta", "vflip"])

    table = pd.read_csv(out)
    bundle = ModelBundle.load(model_dir)
    features = np.array([[0.2, -0.2, 1, 1]] * 3, np.float32)  # both values missing: medians
    data = SplitData(pixels, np.arange(3), np.zeros((3, 6), np.float32), features, pd.DataFrame())
    expected = bundle.probabilities(by_hand(bundle.model.eval(), data, ("hflip", "shift")))
    order = table["source"].str.extract(r"scan(\d)")[0].astype(int).to_numpy()
    got = table[[f"{n}_prob" for n in LABELS]].to_numpy()
    np.testing.assert_allclose(got, expected[order].round(6), atol=2e-6)
    plain = pd.read_csv(tmp_path / "plain.csv")[[f"{n}_prob" for n in LABELS]].to_numpy()
    assert np.abs(got - plain).max() > 1e-4
    assert json.loads(out.with_suffix(".json").read_text())["tta"] == ["hflip", "shift"]
    assert json.loads((tmp_path / "plain.json").read_text())["tta"] == []


def test_evaluate_applies_tta_and_records_it(model_dir, tmp_path):
    root = write_tiny_cache(tmp_path, n_patients=8, per_patient=3)
    bundle = ModelBundle.load(model_dir)
    bundle.save(root / "models")
    params = from_dict(
        Params,
        {
            "data": {"report": str(root / "data/raw_report.json")},
            "preprocess": {"height": 32, "width": 32, "cache_dir": str(root / "data/cache")},
            "split": {"out_dir": str(root / "data/split")},
            "train": {"model_dir": str(root / "models")},
            "evaluate": {"bootstrap": 5, "tta": ["hflip"], "out_dir": str(root / "reports")},
            "tracking": {"enabled": False},
        },
    )
    metrics = evaluate.run(params)
    assert metrics["context"]["tta"] == ["hflip"]

    test = load_splits(
        root / "data/cache", root / "data/split", LABELS, ("BCVA", "CST"), names=("test",)
    )["test"]
    data = SplitData(
        test.images[test.rows], np.arange(len(test)), test.labels, test.clinical, test.frame
    )
    expected = bundle.probabilities(by_hand(bundle.model.eval(), data, ("hflip",)))
    table = pd.read_csv(root / "reports/predictions.csv")
    got = table[[f"{n}_prob" for n in LABELS]].to_numpy()
    np.testing.assert_allclose(got, expected.round(6), atol=2e-6)
    plain = bundle.probabilities(by_hand(bundle.model, data, ()))
    assert np.abs(expected - plain).max() > 1e-4  # without TTA the test would fail
