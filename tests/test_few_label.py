"""benchmarks/few_label.py and `model.pretrained: file:<model file>`: the pure parts on
made-up data, and one small run on ../shared (skipped when it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import load_benchmark, png_bytes
from olives.config import ModelConfig
from olives.evaluation.paired import holm, paired_interval
from olives.models import ModelBundle, build_model
from olives.models.backbone import create_backbone
from olives.models.weights import WeightsUnavailableError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BACKBONE = "tf_efficientnet_lite0"


bench = load_benchmark("few_label")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny trained-model file with a random backbone: checks the plumbing, not the numbers."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=BACKBONE, pretrained="none", fusion="image"), 2, 0)
    bundle = ModelBundle(
        model=model,
        labels=("B1", "B2"),
        clinical=(),
        thresholds=(0.5, 0.5),
        clinical_stats={},
        image_size=(32, 32),
    )
    folder = tmp_path_factory.mktemp("model")
    bundle.save(folder)
    return folder


def test_a_model_file_gives_its_backbone_to_model_pretrained_file(model_dir):
    path = model_dir / "model.safetensors"
    backbone, _ = create_backbone(BACKBONE, f"file:{path}")
    trained = ModelBundle.load(path).model.backbone.state_dict()
    loaded = backbone.state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    with pytest.raises(WeightsUnavailableError, match="trained with backbone 'tf_efficientnet_l"):
        create_backbone("tf_efficientnet_lite1", f"file:{path}")


def test_the_half_split_keeps_each_patient_on_one_side_and_repeats_per_seed():
    rng = np.random.default_rng(3)
    patients = np.repeat([f"p{i}" for i in range(30)], rng.integers(1, 4, 30))
    classes = rng.integers(0, 4, len(patients))
    first = bench.half_split(patients, classes, 0)
    for test in (first, bench.half_split(patients, classes, 1)):
        sides = pd.Series(test).groupby(patients).nunique()
        assert (sides == 1).all()  # no patient on both sides
        assert 10 <= len(set(patients[test])) <= 20  # about half the patients
    assert np.array_equal(first, bench.half_split(patients, classes, 0))
    assert not np.array_equal(first, bench.half_split(patients, classes, 1))


def test_the_table_gives_the_paired_rule_of_the_made_up_aurocs():
    finetune = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10]  # synthetic - imagenet, one per pair
    linear = [0.05, -0.04, 0.02, -0.03, 0.01, -0.02]
    rows = []
    for i, (d_fine, d_lin) in enumerate(zip(finetune, linear, strict=True)):
        base = 0.7 + 0.01 * i
        for mode, diff in (("finetune", d_fine), ("linear", d_lin)):
            key = {"split": i // 2, "seed": i % 2, "mode": mode}
            rows += [{**key, "init": "imagenet", "auroc": base}]
            rows += [{**key, "init": "synthetic", "auroc": base + diff}]
    found = {r["mode"]: r for r in bench.compare(pd.DataFrame(rows), bench.MODES)}
    split_means = {  # each split's two seeds averaged: the splits are the replicates
        m: np.asarray(d).reshape(3, 2).mean(axis=1)
        for m, d in (("finetune", finetune), ("linear", linear))
    }
    expected = {m: paired_interval(d) for m, d in split_means.items()}
    adjusted = holm([expected["finetune"][3], expected["linear"][3]])
    for (mode, (mean, low, high, p)), p_holm in zip(expected.items(), adjusted, strict=True):
        r = found[mode]
        assert (r["mean"], r["low"], r["high"]) == pytest.approx((mean, low, high))
        assert (r["p"], r["p_holm"], r["pairs"], r["units"]) == pytest.approx((p, p_holm, 6, 3))
    assert found["finetune"]["verdict"] == "helped"
    assert found["linear"]["verdict"] == "no clear difference"
    assert found["finetune"]["method_mean"] == pytest.approx(0.725 + np.mean(finetune))
    assert any("+0.100 [" in line for line in bench.comparison_lines(list(found.values())))


def test_unusable_rows_of_the_sample_are_left_out_with_their_reason(tmp_path):
    root = tmp_path / "sample"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        (root / f"images/s{i}.png").write_bytes(png_bytes(i))
    (root / "images/bad.png").write_bytes(b"not an image")
    rows = [
        "images/s0.png,p1,0,1,0,0",
        "images/bad.png,p2,1,0,0,0",
        "images/s1.png,p3,0,1,0,1",  # two classes
    ]
    (root / "metadata.csv").write_text(
        "file_name,Patient_ID,CNV,DME,DRUSEN,NORMAL\n" + "\n".join(rows)
    )
    sample = bench.read_sample(root, 16, "stretch")
    assert sample.images.shape == (1, 16, 16) and sample.classes.tolist() == [1]
    assert sample.patients.tolist() == ["p1"]
    assert len(sample.left_out) == 2
    assert "line 3" in sample.left_out[0] and "cannot decode" in sample.left_out[0]
    assert "line 4" in sample.left_out[1] and "not one 1" in sample.left_out[1]


def test_without_shared_it_skips_and_without_a_model_it_says_so(tmp_path, capsys):
    assert bench.main(["--shared", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("skipped: ")
    if not (SHARED / bench.KERMANY).is_dir():
        pytest.skip(f"{SHARED} not found")
    missing = ["--shared", str(SHARED), "--model", str(tmp_path / "none")]
    assert bench.main(missing) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err


@pytest.mark.skipif(not (SHARED / "kermany-oct-sample").is_dir(), reason=f"{SHARED} not found")
def test_one_small_run_on_the_real_sample(model_dir, tmp_path, capsys):
    out = tmp_path / "few.json"
    argv = ["--model", str(model_dir), "--shared", str(SHARED), "--splits", "0", "--seeds", "0"]
    argv += ["--epochs", "1", "--size", "64", "--json", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("protocol (fixed before any result):")
    result = json.loads(out.read_text())
    assert [(r["mode"], r["init"]) for r in result["runs"]] == [
        (m, i) for m in bench.MODES for i in ("synthetic", "imagenet")
    ]
    assert all(0.0 <= r["auroc"] <= 1.0 and r["test_scans"] > 0 for r in result["runs"])
    assert [c["mode"] for c in result["comparisons"]] == list(bench.MODES)
    assert all(
        c["pairs"] == 1 and c["verdict"] == "no clear difference" for c in result["comparisons"]
    )
