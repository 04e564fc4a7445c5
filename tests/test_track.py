"""MLflow mirrors what DVC holds (the `track` stage), the model's identity, `olives promote`.

DVC may skip `evaluate` (a fresh clone retrains the same model hash) or restore `train` from its
run cache without running it; `track` runs after every `dvc repro` and must then leave the store
as if every stage had run, and change nothing when run again."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import mlflow.pyfunc
import pytest

from conftest import write_tiny_cache
from olives.cli import main
from olives.config import Params, from_dict
from olives.errors import InputError
from olives.io import file_sha256
from olives.serving import pyfunc
from olives.stages import evaluate, track, train
from olives.tracking.experiment import KIND, KIND_TAG, VIEW_TAG
from olives.tracking.registry import identify, promote_file
from olives.tracking.runs import Tracker, stays_words
from test_training import _relative_params

NAME = "olives-biomarkers"


@pytest.fixture(scope="module")
def trained_untracked(tmp_path_factory) -> Path:
    """A tiny project trained and evaluated with tracking OFF: the state DVC leaves when it
    restores `train` and skips `evaluate` (nothing reached MLflow)."""
    root = write_tiny_cache(tmp_path_factory.mktemp("track"))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = params_for(root, enabled=False)
        train.run(params)
        evaluate.run(params)
    finally:
        os.chdir(cwd)
    return root


def params_for(root: Path, enabled: bool = True) -> Params:
    raw = {**_relative_params(), "evaluate": {"bootstrap": 10}}
    raw["tracking"] = {"enabled": enabled, "tracking_uri": f"sqlite:///{root}/store/mlflow.db"}
    return from_dict(Params, raw)


@pytest.fixture()
def project(trained_untracked, tmp_path, monkeypatch) -> tuple[Path, Params]:
    """A copy of the untracked project with an empty store of its own."""
    root = tmp_path / "p"
    shutil.copytree(trained_untracked, root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root, params_for(root)


def store_state(params: Params) -> dict:
    """Everything `track` may write: runs, metric histories, versions, alias, tags."""
    client = Tracker(params.tracking).client()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    history = {
        (r.info.run_id, key): len(client.get_metric_history(r.info.run_id, key))
        for r in runs
        for key in r.data.metrics
    }
    versions = client.search_model_versions(f"name='{NAME}'")
    return {
        "runs": sorted(r.info.run_id for r in runs),
        "history": history,
        "versions": sorted((v.version, tuple(sorted(v.tags.items()))) for v in versions),
        "champion": client.get_model_version_by_alias(NAME, "champion").version,
        "kind": experiment.tags.get(KIND_TAG),
    }


def test_track_records_a_restored_train_and_a_skipped_evaluate(project, monkeypatch):
    root, params = project
    result = track.run(params)
    client = Tracker(params.tracking).client()
    run = client.get_run(result["run_id"])
    sha = file_sha256(root / "models/model.safetensors")
    assert run.data.tags["model_sha256"] == sha
    assert run.data.tags[track.RECORDED_TAG] == "dvc-outputs"
    assert "test_macro_auroc" in run.data.metrics and "best_val_macro_auroc" in run.data.metrics
    assert run.data.params["train.epochs"] == "1"
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == run.info.run_id and version.tags["model_sha256"] == sha
    assert float(version.tags["test_macro_auroc"]) == run.data.metrics["test_macro_auroc"]
    assert result == {"run_id": run.info.run_id, "version": "1", "champion": "1"}
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    assert experiment.tags[KIND_TAG] == KIND  # the UI opens on the runs table
    # pinned by olives, not inferred by MLflow (a subprocess that loads the model: 8 s)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", params.tracking.tracking_uri)
    listed = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{NAME}/1")).read_text()
    assert set(pyfunc.requirements()) <= set(listed.split())


def test_track_twice_changes_nothing(project):
    _, params = project
    track.run(params)
    before = store_state(params)
    track.run(params)
    assert store_state(params) == before


def test_track_completes_the_run_train_logged(project):
    """Train ran with tracking on (a fresh clone), evaluate was skipped: the same run gets the
    test metrics and the model; no second run."""
    _, params = project
    train.run(params)  # the same data and seed: a new run for a (maybe new) model file
    client = Tracker(params.tracking).client()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    (trained,) = client.search_runs([experiment.experiment_id])
    assert "test_macro_auroc" not in trained.data.metrics
    evaluate.run(params)
    track.run(params)
    (after,) = client.search_runs([experiment.experiment_id])
    assert after.info.run_id == trained.info.run_id
    assert "test_macro_auroc" in after.data.metrics and "model_id" in after.data.tags
    assert track.RECORDED_TAG not in after.data.tags


def test_test_metrics_of_another_model_are_not_recorded(project, caplog):
    root, params = project
    metrics = root / "reports/metrics.json"
    metrics.write_text(metrics.read_text().replace('"model_sha256": "', '"model_sha256": "x'))
    with caplog.at_level(logging.WARNING):
        result = track.run(params)
    run = Tracker(params.tracking).client().get_run(result["run_id"])
    assert "test_macro_auroc" not in run.data.metrics
    assert "computed for another model file" in caplog.text


def test_identity_and_promote(project, capsys):
    root, params = project
    tracker = Tracker(params.tracking)
    sha = file_sha256(root / "models/model.safetensors")
    assert identify(tracker, sha).version is None  # no store yet: nothing is created
    assert not (root / "store/mlflow.db").exists()
    track.run(params)
    first = identify(tracker, sha)
    assert (first.registered, first.is_champion) == (f"{NAME}/1", True)
    assert "version 1, @champion" in first.words()

    other = dataclasses.replace(params, seed=5)  # a second model file, registered, not champion
    train.run(other)
    evaluate.run(other)
    other_sha = file_sha256(root / "models/model.safetensors")
    with pytest.MonkeyPatch.context() as patch:  # a lower validation AUROC: the champion stays
        patch.setattr(Tracker, "promote", lambda *a: "stays")
        track.run(other)
    second = identify(tracker, other_sha)
    assert second.version == "2" and not second.is_champion
    assert "not the champion: @champion is version 1" in second.words()

    assert main(["--params", str(write_params(root, other)), "promote"]) == 0
    assert identify(tracker, other_sha).is_champion
    assert promote_file(tracker, other_sha, "1") == f"@champion: version 2 -> version 1 of {NAME}"
    again = promote_file(tracker, other_sha, "1")  # the way back after a failed experiment
    assert again == f"@champion already on version 1 of {NAME}: nothing to move"
    with pytest.raises(InputError, match="no version '9'"):
        promote_file(tracker, other_sha, "9")
    with pytest.raises(InputError, match="is not a version"):
        promote_file(tracker, "0" * 64)


def write_params(root: Path, params: Params) -> Path:
    import yaml

    from olives.config import to_dict

    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(params)))
    return path


def test_each_tracker_writes_to_its_own_store(tmp_path, monkeypatch):
    """MLflow 3's set_tracking_uri also sets MLFLOW_TRACKING_URI; a Tracker must not leave it
    set, or every later Tracker of the process would take the first one's store."""
    from mlflow import MlflowClient

    from olives.config import TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uris = [f"sqlite:///{tmp_path}/{name}.db" for name in ("first", "second")]
    for uri in uris:
        tracker = Tracker(TrackingConfig(tracking_uri=uri, experiment="e"))
        assert tracker.uri == uri
        with tracker.run(run_name=uri):
            tracker.log_metrics({"x": 1.0})
        assert "MLFLOW_TRACKING_URI" not in os.environ
    for uri in uris:
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
        assert [r.info.run_name for r in runs] == [uri]


def test_a_retrain_of_the_same_file_adds_a_run_not_a_version(project, caplog):
    """`dvc repro -f` retrains byte-identical weights: a second run of the same file, whose
    track finds the version the first run registered."""
    _, params = project
    first = track.run(params)
    client = Tracker(params.tracking).client()
    trained = client.get_run(first["run_id"])
    tags = {k: v for k, v in trained.data.tags.items() if not k.startswith("mlflow.")}
    with Tracker(params.tracking).run(run_name="rerun", tags=tags) as again:
        again.log_metrics({"best_val_macro_auroc": trained.data.metrics["best_val_macro_auroc"]})
    with caplog.at_level(logging.INFO):
        second = track.run(params)
    assert second["run_id"] == again.run_id != first["run_id"]
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    assert second["version"] == second["champion"] == "1"
    assert "version 1 already holds @champion" in caplog.text
    assert "test_macro_auroc" in client.get_run(again.run_id).data.metrics


def test_the_champion_rule_says_equal_higher_or_lower(tmp_path, monkeypatch):
    """Versions of one split with validation AUROCs 0.8, 0.8, 0.7, 0.9: equal and lower keep the
    champion, in words that say which; higher moves it. Same-named runs get #2, #3, ..."""
    from olives.config import TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db", experiment="e"))
    client = tracker.client()
    client.create_registered_model(NAME)
    said = []
    for auroc in (0.8, 0.8, 0.7, 0.9):
        with tracker.run(run_name="e1-s0/concat-focal/resnet18", tags={"split_md5": "s"}) as run:
            run.log_metrics({"best_val_macro_auroc": auroc})
        version = client.create_model_version(NAME, "file:///nowhere", run_id=run.run_id)
        said.append(tracker.promote(NAME, "champion", version, run.run_id))
    assert said == [
        "@champion now on version 1",
        "@champion stays on version 1: its validation AUROC is equal (0.8000)",
        "@champion stays on version 1: its validation AUROC is higher (0.8000 > 0.7000)",
        "@champion now on version 4",
    ]
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        "e1-s0/concat-focal/resnet18",
        "e1-s0/concat-focal/resnet18 #2",
        "e1-s0/concat-focal/resnet18 #3",
        "e1-s0/concat-focal/resnet18 #4",
    ]


def test_stays_words_when_a_validation_auroc_is_missing():
    assert stays_words("champion", "1", 0.9, None) is None
    assert "not recorded counts as -1" in stays_words("champion", "1", None, 0.5)


def test_the_version_and_the_model_say_what_the_model_is(project):
    root, params = project
    track.run(params)
    client = Tracker(params.tracking).client()
    version = client.get_model_version(NAME, "1")
    text = version.description
    sha = file_sha256(root / "models/model.safetensors")
    run = client.get_run(version.run_id)
    assert sha in text and "tf_efficientnet_lite0" in text and "`concat` fusion" in text
    assert f"macro AUROC {run.data.metrics['test_macro_auroc']:.3f}" in text
    assert "**Trained on SYNTHETIC data**" in text
    assert "`image`" in text and "`BCVA`" in text and "olives request scan.png" in text
    model = client.get_registered_model(NAME).description
    assert model.startswith("`@champion` is version 1;") and text in model


def test_the_experiment_opens_on_the_runs_table_with_the_test_metrics(project):
    _, params = project
    track.run(params)
    client = Tracker(params.tracking).client()
    tags = client.get_experiment_by_name(params.tracking.experiment).tags
    assert tags[KIND_TAG] == KIND
    view = json.loads(tags[VIEW_TAG])  # the envelope MLflow's "Save view" writes
    assert view["name"] == "Test metrics" and isinstance(view["createdAt"], int)
    assert "metrics.`test_macro_auroc`" in json.loads(view["state"])["selectedColumns"]
