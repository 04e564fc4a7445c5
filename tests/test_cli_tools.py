"""`olives score` and `olives compare` on tiny known examples."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from olives.cli import main
from olives.evaluation.compare import CompareError, compare_runs

LABELS = ["B1", "B2", "B3", "B4", "B5", "B6"]


def test_score_prints_phase1_and_reports_mismatches(tmp_path, capsys):
    truth = pd.DataFrame(
        {
            "Path": ["a.png", "b.png", "c.png", "d.png"],
            "B1": [1, 0, 1, 0],
            "B2": [0, 0, 1, 1],
            "B3": [1, 1, 1, 1],
            "B4": [0, 0, 0, 1],
            "B5": [1, 0, 0, 0],
            "B6": [0, 1, 0, 1],
        }
    )
    sub = truth.copy()
    sub.loc[0, "B1"] = 0  # one miss
    sub.loc[3, "Path"] = "e.png"  # one path not in the labels
    truth.to_csv(tmp_path / "labels.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    assert main(["score", str(tmp_path / "sub.csv"), str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    matched = truth.iloc[:3]
    expected = f1_score(matched[LABELS], sub.iloc[:3][LABELS], average="macro", zero_division=0)
    assert f"{expected:.4f}" in out
    assert "e.png" in out and "d.png" in out


def test_score_bad_file_is_one_clear_line(tmp_path, caplog):
    (tmp_path / "sub.csv").write_text("Path,B1\na.png,2\n")
    assert main(["score", str(tmp_path / "sub.csv"), str(tmp_path / "sub.csv")]) == 1
    assert "sub.csv" in caplog.text


def test_compare_sorts_runs_by_metric(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("exp")
    for fusion, auroc in (("image", 0.8), ("concat", 0.9), ("clinical", 0.7)):
        with mlflow.start_run(run_name=fusion):
            mlflow.log_params({"model.fusion": fusion, "seed": 1})
            mlflow.log_metric("test_macro_auroc", auroc)
    table = compare_runs(uri, "exp", ["model.fusion"], ["test_macro_auroc"])
    assert table["model.fusion"].tolist() == ["concat", "image", "clinical"]
    assert table["test_macro_auroc"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    with pytest.raises(CompareError, match="no MLflow experiment 'nope'"):
        compare_runs(uri, "nope")
    default = compare_runs(uri, "exp", metrics=["test_macro_auroc"])
    assert list(default.columns) == ["run_id", "run_name", "model.fusion", "test_macro_auroc"]
    with pytest.raises(CompareError, match="did you mean 'test_macro_auroc'"):
        compare_runs(uri, "exp", metrics=["test_macro_aurco"])
    with pytest.raises(CompareError, match="did you mean 'test_macro_auroc'"):
        compare_runs(uri, "exp", metrics=["test_macro_auroc"], sort_by="test_macro_auroc_")
