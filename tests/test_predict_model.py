"""`olives predict --model`: a model that is not where it is looked for is one ERROR line that
says where it looked and what to pass, and nothing is created while looking."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from olives.cli import main
from olives.serving.locate import registered_name

CHAMPION = "models:/olives-biomarkers@champion"


@pytest.fixture()
def scan(tmp_path, monkeypatch) -> Path:
    """A scan in an empty working folder outside any repository, no store named yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the project root: no models/ there
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG not read: the model is looked for first")
    return path


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def predict(scan: Path, model: str) -> int:
    return main(["predict", str(scan), "--model", model, "--out", str(scan.parent / "o.csv")])


def test_the_default_models_folder_outside_the_repo_names_where_it_looked(scan, caplog):
    assert main(["predict", str(scan), "--out", str(scan.parent / "o.csv")]) == 1
    (line,) = errors(caplog)
    assert f"model file not found at {scan.parent / 'models'}" in line
    assert "--model <repo>/models" in line and f"--model {CHAMPION}" in line


def test_a_repo_with_a_trained_model_is_suggested_by_its_path(scan, tmp_path, monkeypatch, caplog):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models/model.safetensors").write_bytes(b"")
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert predict(scan, "models") == 1
    (line,) = errors(caplog)
    assert f"--model {repo / 'models'}" in line


def test_a_missing_sqlite_store_is_named_and_not_created(scan, tmp_path, monkeypatch, caplog):
    database = tmp_path / "elsewhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    before = sorted(tmp_path.rglob("*"))
    assert predict(scan, CHAMPION) == 1
    (line,) = errors(caplog)
    assert f"the MLflow store sqlite:///{database} does not exist" in line
    assert "Traceback" not in caplog.text
    assert sorted(tmp_path.rglob("*")) == before  # no database, no folder, no mlruns/


def test_a_store_without_the_model_names_the_models_it_holds(scan, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    client.search_registered_models()  # creates the store, empty
    assert predict(scan, CHAMPION) == 1
    assert errors(caplog) == [
        f"InputError: --model {CHAMPION}: the MLflow store {uri} holds no registered model "
        "(looked for 'olives-biomarkers')"
    ]
    caplog.clear()
    for name in ("teacher", "olives-biomarkers-ensemble"):
        client.create_registered_model(name)
    assert predict(scan, CHAMPION) == 1
    (line,) = errors(caplog)
    assert line.endswith(
        f"the MLflow store {uri} holds no registered model 'olives-biomarkers'; it holds: "
        "olives-biomarkers-ensemble, teacher"
    )


def test_a_registered_model_without_the_alias_is_one_line(scan, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(uri).create_registered_model("olives-biomarkers")
    assert predict(scan, CHAMPION) == 1
    (line,) = errors(caplog)
    assert "champion" in line and f"(store: {uri})" in line and "\n" not in line


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        (CHAMPION, "olives-biomarkers"),
        ("models:/olives-biomarkers/3", "olives-biomarkers"),
        ("models:/m-0123abcd", None),  # a logged model's id: no registered name
        ("runs:/abc/model", None),
    ],
)
def test_the_registered_name_of_a_uri(uri, name):
    assert registered_name(uri) == name
