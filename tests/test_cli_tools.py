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


def test_compare_sorts_runs_by_metric(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri sets it: undone after
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


def test_help_says_where_settings_live_and_what_predict_writes(capsys):
    """`olives stage train --help` points to params.yaml and `dvc exp run -S`; `--out` too."""
    from olives.cli import build_parser

    parser = build_parser()
    for argv in (["stage", "train", "--help"], ["predict", "--help"], ["--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    text = capsys.readouterr().out
    assert "params.yaml" in text and "dvc exp run -S" in text
    assert "one row per scan" in text and "developer" not in text


def test_help_leads_with_the_users_commands_on_one_screen(capsys, monkeypatch):
    """The first screen: a short usage line, the user's commands first, one line each, then
    the two groups of stages; no stage name among them."""
    from olives.cli import GROUPS, PAPER, STAGES, TOOLS, main

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert lines[0] == "usage: olives [-v] [--params FILE] COMMAND ..."
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line[2] != " "]
    listed = [word for word in listed if not word.startswith("-")]
    assert listed == [*TOOLS, *GROUPS]
    assert listed[:5] == ["predict", "score", "compare", "promote", "request"]
    assert not set(listed) & (set(STAGES) | set(PAPER))


@pytest.mark.parametrize(
    ("old", "new"), [("train", "olives stage train"), ("ablate", "olives paper ablate")]
)
def test_an_old_stage_name_names_the_new_command(old, new, capsys):
    from olives.cli import main

    assert main(["--params", "x.yaml", old, "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"`{new}`" in err[0]


def test_every_main_command_help_says_what_it_reads_writes_with_an_example(capsys):
    from olives.cli import PAPER, STAGES, TOOLS, USAGE, build_parser

    parser = build_parser()
    commands = [[name] for name in TOOLS] + [["stage", name] for name in STAGES]
    commands += [["paper", name] for name in PAPER]
    for argv in commands:
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--help"])
        text = capsys.readouterr().out
        name = argv[-1]
        if argv[0] == "paper" and name != "teacher_track":  # run by make paper / make teacher
            continue
        assert name in USAGE, name
        for word in ("reads:", "writes:", "example:"):
            assert word in text, (name, word)
    assert "olives promote" in USAGE["promote"][2]


def test_request_writes_a_body_the_server_reads(tmp_path, capsys):
    """`olives request` prints strict JSON with one base64 row per image; bad values stop it."""
    import base64
    import json

    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    assert main(["request", str(image), str(image), "--bcva", "71"]) == 0
    body = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    split = body["dataframe_split"]
    assert split["columns"] == ["image", "BCVA", "CST"]
    assert [row[1:] for row in split["data"]] == [[71.0, None]] * 2
    assert base64.b64decode(split["data"][0][0]) == image.read_bytes()
    assert main(["request", str(image), "--cst", "-500"]) == 1
    assert main(["request", str(tmp_path / "missing.png")]) == 1
