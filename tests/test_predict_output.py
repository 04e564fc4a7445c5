"""What `olives predict` writes says what it is: integer decisions, the model's digest on every
row, `OUT.json` (the model card, with a warning for a synthetic-trained model), and Grad-CAM
overlays at the scan's own aspect ratio with their numbers on them."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from olives.cli import build_parser, main
from olives.config import ModelConfig
from olives.data.decode import resize
from olives.io import file_sha256
from olives.models import ModelBundle, build_model
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.gradcam import annotated_overlay, empty_reason, overlay, scan_view, title_strip
from olives.runtime import Runtime
from olives.serving.predict import model_card
from olives.serving.predictor import Predictor
from olives.serving.scans import Scan

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
THRESHOLDS = (0.5, 0.4, 0.6, 0.5, 0.3, 0.5)
STATS = {
    "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
    "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
}


def png(seed: int, shape: tuple[int, int] = (64, 80)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_bundle(source: str | None = "synthetic") -> ModelBundle:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion="concat")
    model = build_model(cfg, len(LABELS), 2)
    nn.init.normal_(model.head.weight, std=0.5)
    return ModelBundle(
        model=model,
        labels=LABELS,
        clinical=("BCVA", "CST"),
        thresholds=THRESHOLDS,
        clinical_stats=STATS,
        image_size=(32, 32),
        params={"data.source": source} if source else {},
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model whose file says it was trained on synthetic data."""
    folder = tmp_path_factory.mktemp("model")
    tiny_bundle("synthetic").save(folder)
    return folder


@pytest.fixture(scope="module")
def predicted(model_dir, tmp_path_factory) -> Path:
    """`olives predict` on two scans and a broken file, by volume: the output folder."""
    root = tmp_path_factory.mktemp("predicted")
    (root / "a.png").write_bytes(png(0))
    (root / "b.png").write_bytes(png(1))
    (root / "broken.png").write_bytes(b"not an image")
    args = ["predict", *(str(root / n) for n in ("a.png", "b.png", "broken.png"))]
    out = ["--out", str(root / "p.csv"), "--by", "volume"]
    assert main([*args, "--model", str(model_dir), *out]) == 0
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_decisions_are_integers_even_when_a_row_failed(predicted):
    scans, volumes = rows(predicted / "p.csv"), rows(predicted / "p.volume.csv")
    assert len(scans) == 3 and len(volumes) == 2
    broken = [r for r in scans if r["source"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["error"]
    for row in scans + volumes:
        failed = row in broken
        for name in LABELS:
            assert row[f"{name}_pred"] in ({""} if failed else {"0", "1"}), row[f"{name}_pred"]
    assert "1.0" not in {row[f"{n}_pred"] for row in scans + volumes for n in LABELS}


def test_out_json_says_what_model_made_the_predictions(predicted, model_dir):
    sha256 = file_sha256(model_dir / MODEL_FILE)
    card = json.loads((predicted / "p.json").read_text())
    assert card["model"] == str(model_dir / MODEL_FILE) and card["model_sha256"] == sha256
    assert card["data_source"] == "synthetic" and "synthetic" in card["warning"]
    assert "not meaningful" in card["warning"]
    assert card["labels"] == list(LABELS)
    assert card["thresholds"] == dict(zip(LABELS, THRESHOLDS, strict=True))
    assert card["clinical"] == ["BCVA", "CST"]
    assert card["image_size"] == {"height": 32, "width": 32}
    assert card["scans"] == {"predicted": 2, "failed": 1, "warned": 0}
    assert card["files"] == {"scans": "p.csv", "volume": "p.volume.csv"}
    assert {row["model_sha256"] for row in rows(predicted / "p.csv")} == {sha256}


def test_a_synthetic_model_is_named_once_as_a_warning(model_dir, tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(png(0))
    out = tmp_path / "o.csv"
    with caplog.at_level(logging.WARNING):
        assert (
            main(["predict", str(tmp_path / "a.png"), "--model", str(model_dir), "--out", str(out)])
            == 0
        )
    said = [r for r in caplog.records if "trained on synthetic OCT" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_the_card_warns_only_when_the_training_data_is_synthetic_or_unknown():
    real = model_card(tiny_bundle("huggingface"), "models:/olives@champion", "ab" * 32)
    assert real["data_source"] == "huggingface" and real["warning"] is None
    assert real["model"] == "models:/olives@champion" and real["model_sha256"] == "ab" * 32
    unknown = model_card(tiny_bundle(None), "m.safetensors", "cd" * 32)
    assert unknown["data_source"] is None and "does not record" in unknown["warning"]


def test_out_must_be_the_csv_not_its_card(model_dir, tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(png(0))
    args = ["predict", str(tmp_path / "a.png"), "--model", str(model_dir)]
    assert main([*args, "--out", str(tmp_path / "o.json")]) == 1
    assert "give a .csv" in caplog.text and not (tmp_path / "o.json").exists()


def test_predict_help_names_the_card_and_the_digest_column(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    text = capsys.readouterr().out
    assert "OUT.json" in text and "model_sha256" in text


def test_the_predictor_keeps_each_scans_decoded_shape(model_dir):
    scans = [Scan("wide", data=png(0, (150, 300))), Scan("bad", data=b"nope")]
    decoded = Predictor(ModelBundle.load(model_dir), Runtime(torch.device("cpu"))).pixels(scans)
    assert decoded.shapes == [(150, 300), None]
    assert decoded.images.shape == (2, 32, 32)


def test_scan_view_gives_back_the_scans_proportions():
    image = np.full((32, 32), 200, np.uint8)
    cam = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    shown, heat = scan_view(image, cam, (150, 300))
    assert shown.shape == heat.shape == (150, 300)
    assert scan_view(image, cam, (1000, 3000))[0].shape == (256, 768)  # longest side capped
    assert scan_view(image, cam, (40, 80))[0].shape == (128, 256)  # and made readable
    assert scan_view(image, cam, (400, 800), "crop")[0].shape == (400, 400)  # what it saw
    scan = np.random.default_rng(0).integers(100, 256, (150, 300), dtype=np.uint8)
    padded = resize(scan, 32, 32, "pad")  # black bands above and below the scan
    assert padded.min() == 0
    shown, _ = scan_view(padded, cam, (150, 300), "pad")
    assert shown.shape == (150, 300) and shown.min() > 50  # the bands are cut off


def test_annotated_overlay_puts_the_numbers_above_the_scan_not_on_it():
    image = np.random.default_rng(0).integers(0, 256, (150, 300), dtype=np.uint8)
    cam = np.linspace(0, 1, 150 * 300).reshape(150, 300)
    drawn = annotated_overlay(image, cam, ["B1: present", "probability 0.812, threshold 0.500"])
    expected = (overlay(image, cam) * 255).round().astype(np.uint8)
    strip = drawn.shape[0] - 150
    assert drawn.shape[1] == 320 and 30 < strip < 150  # a narrow scan is centred on white
    np.testing.assert_array_equal(drawn[strip:, 10:310], expected)
    assert drawn[:strip].min() < 100 and np.median(drawn[:strip]) == 255  # dark text on white
    absent = annotated_overlay(image, cam, ["B1: absent", "probability 0.812, threshold 0.500"])
    assert absent.shape == drawn.shape and not np.array_equal(absent[:strip], drawn[:strip])


def test_gradcam_overlays_follow_the_scan_and_show_its_numbers(model_dir, tmp_path):
    (tmp_path / "wide.png").write_bytes(png(3, (200, 400)))  # 400 wide, 200 high
    out, cams = tmp_path / "o.csv", tmp_path / "cams"
    args = ["predict", str(tmp_path / "wide.png"), "--model", str(model_dir), "--out", str(out)]
    assert main([*args, "--gradcam", str(cams)]) == 0
    row = rows(out)[0]
    for j, name in enumerate(LABELS):
        (path,) = cams.glob(f"wide-*_000_{name}.png")
        picture = np.asarray(Image.open(path).convert("RGB"))
        decision = "present" if row[f"{name}_pred"] == "1" else "absent"
        lines = [
            f"{name}: {decision}",
            f"probability {float(row[f'{name}_prob']):.3f}, threshold {THRESHOLDS[j]:.3f}",
        ]
        reason = empty_reason(None)  # when the map is empty, the strip says so too
        candidates = [title_strip(lines, 400), title_strip([*lines, reason], 400)]
        strips = [c for c in candidates if np.array_equal(picture[: len(c)], c)]
        assert len(strips) == 1, f"{path.name}: not the strip of {lines}"
        height, width = picture.shape[0] - len(strips[0]), picture.shape[1]
        assert (width, height) == (400, 200)  # the scan's 2:1, not the model's square
