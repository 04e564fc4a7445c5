"""benchmarks/sim_to_real.py: its pure parts on made-up data, and one run on ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from conftest import load_benchmark, png_bytes
from olives.config import ModelConfig
from olives.evaluation.intervals import draw_patients
from olives.models import ModelBundle, build_model
from olives.runtime import Runtime
from olives.serving.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
STATS = {
    "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
    "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
}


bench = load_benchmark("sim_to_real")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A freshly initialised tiny model: checks the plumbing, not the numbers."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion="concat")
    model = build_model(cfg, len(LABELS), 2)
    nn.init.normal_(model.head.weight, std=0.5)
    bundle = ModelBundle(
        model=model,
        labels=LABELS,
        clinical=("BCVA", "CST"),
        thresholds=(0.5,) * 6,
        clinical_stats=STATS,
        image_size=(32, 32),
    )
    folder = tmp_path_factory.mktemp("model")
    bundle.save(folder)
    return folder


def test_the_interval_resamples_patients_not_scans():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(8), 5)
    y = (patients % 2).astype(float)  # each patient one class, as in Kermany
    scores = np.stack([y * 0.3 + rng.random(40), rng.random(40)], axis=1)
    found = bench.auroc_intervals(y, scores, patients, ["B6", "B5"], 200, 7)

    inverse = np.unique(patients, return_inverse=True)[1]
    by_hand = {"B6": [], "B5": [], "macro": []}
    for draw in draw_patients(8, 200, 7):  # the same draws, rows taken patient by patient
        rows = np.concatenate([np.flatnonzero(inverse == k) for k in draw])
        if len(np.unique(y[rows])) < 2:
            continue
        aucs = [roc_auc_score(y[rows], scores[rows, j]) for j in range(2)]
        by_hand["B6"].append(aucs[0])
        by_hand["B5"].append(aucs[1])
        by_hand["macro"].append(np.mean(aucs))
    for key, values in by_hand.items():
        assert found[key]["resamples_used"] == len(values)
        assert found[key]["ci"] == pytest.approx(np.percentile(values, [2.5, 97.5]))
    assert found["B6"]["auroc"] == pytest.approx(roc_auc_score(y, scores[:, 0]))
    assert found["macro"]["auroc"] == pytest.approx(
        np.mean([roc_auc_score(y, scores[:, j]) for j in range(2)])
    )


def test_a_comparison_takes_its_two_classes_and_only_usable_rows():
    frame = pd.DataFrame(
        {
            "patient": ["a", "a", "b", "c", "d", "e"],
            "cls": ["DME", "DME", "NORMAL", "DRUSEN", "NORMAL", "DME"],
            "problem": [None, None, None, None, "bad file", None],
            "B6_prob": [0.9, 0.8, 0.1, 0.5, 0.2, 0.7],
        }
    )
    comparison = bench.Comparison("DME", "NORMAL", ("B6",), "")
    rows = bench.comparison_rows(frame, comparison)
    assert rows["patient"].tolist() == ["a", "a", "b", "e"]
    assert rows["y"].tolist() == [1.0, 1.0, 0.0, 1.0]
    [result] = bench.run_comparison(frame, comparison, LABELS, 50, 0)
    assert result["scans"] == [3, 1] and result["patients"] == [2, 1]
    assert result["auroc"] == 1.0
    missing = bench.Comparison("DME", "NORMAL", ("B7",), "")
    assert bench.run_comparison(frame, missing, LABELS, 50, 0)[0]["skipped"] == "model has no B7"


def test_hostile_metadata_rows_are_left_out_with_their_reason(model_dir, tmp_path):
    root = tmp_path / "kermany"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(png_bytes(9))
    for i in range(3):
        (root / f"images/s{i}.png").write_bytes(png_bytes(i))
    rows = [
        "images/s0.png,p1,0,1,0,0",
        "../secret.png,p2,0,0,0,1",  # leaves the folder: the project's rule refuses it
        "images/s1.png,p3,0,1,0,1",  # two classes
        "images/s2.png,,0,0,0,1",  # no patient
    ]
    (root / "metadata.csv").write_text(
        "file_name,Patient_ID,CNV,DME,DRUSEN,NORMAL\n" + "\n".join(rows)
    )
    predictor = Predictor(ModelBundle.load(model_dir), Runtime(torch.device("cpu")), batch_size=4)
    frame = bench.predict_folder(predictor, root)
    problems = frame["problem"].tolist()
    assert pd.isna(problems[0]) and frame.loc[0, "cls"] == "DME"
    assert "line 3" in problems[1] and "leads outside" in problems[1]
    assert "line 4" in problems[2] and "not one 1" in problems[2]
    assert "line 5" in problems[3] and "Patient_ID is empty" in problems[3]
    assert np.isfinite(frame.loc[0, [f"{b}_prob" for b in LABELS]].astype(float)).all()
    assert frame["BCVA_imputed"].tolist() == [1, 1, 1, 1]


def test_skips_in_one_line_without_shared(tmp_path, capsys):
    assert bench.main(["--shared", str(tmp_path / "none")]) == 0
    assert (
        capsys.readouterr().out.strip() == f"skipped: {tmp_path / 'none' / bench.KERMANY} not found"
    )


def test_end_to_end_on_the_real_sample(shared_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "result.json"
    args = ["--model", str(model_dir), "--shared", str(shared_dir), "--bootstrap", "50"]
    assert bench.main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kermany"]["used"] == 160
    assert [r["comparison"] for r in result["comparisons"]][:3] == ["DME vs NORMAL"] * 3
    assert all(0 <= r["auroc"] <= 1 for r in result["comparisons"])
    assert sorted(result["olives_scan"]) == list(LABELS)
    printed = capsys.readouterr().out
    assert "macro(B6+B5)" in printed and "DRUSEN vs NORMAL" in printed
