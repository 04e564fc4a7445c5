"""Provenance is the experiment's own: under `dvc exp run --queue` every MLflow run carries the
hashes of its own experiment's dvc.lock (not the workspace's), the store stays shared, and the
champion never moves across splits."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from olives.config import Params, TrackingConfig, from_dict
from olives.stages import track
from olives.tracking.provenance import dvc_hash, git_commit, work_tree
from olives.tracking.runs import Tracker, resolve_tracking_uri
from test_pipeline import REPO, TINY, merge

SPLIT_INDEX = "data/split/index.parquet"
NAME = "olives-biomarkers"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def git_repo(root: Path, split_bytes: bytes, locked_md5: str) -> Path:
    """A committed tree with a split index file and a dvc.lock recording `locked_md5` for it."""
    (root / "data/split").mkdir(parents=True)
    (root / SPLIT_INDEX).write_bytes(split_bytes)
    lock = {
        "schema": "2.0",
        "stages": {
            "split": {"cmd": "olives split", "outs": [{"path": SPLIT_INDEX, "md5": locked_md5}]},
            "preprocess": {"cmd": "x", "outs": [{"path": "data/cache", "md5": f"{root.name}.dir"}]},
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    git(root, "init", "-q")
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", root.name)
    return root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_provenance_comes_from_the_work_tree_and_the_store_from_dvc_root(tmp_path, monkeypatch):
    """A queued experiment: DVC_ROOT names the workspace, the stage runs in its own copy."""
    workspace = git_repo(tmp_path / "workspace", b"workspace split", md5(b"workspace split"))
    copy = git_repo(tmp_path / "workspace/.dvc/tmp/exps/tmp1", b"exp split", md5(b"exp split"))
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    assert work_tree() == copy.resolve()
    assert dvc_hash(SPLIT_INDEX) == md5(b"exp split")
    assert dvc_hash("data/cache") == "tmp1.dir"  # a folder: the copy's lock entry
    assert git_commit() == git(copy, "rev-parse", "HEAD") != git(workspace, "rev-parse", "HEAD")
    store = resolve_tracking_uri(TrackingConfig())
    assert store == f"sqlite:///{workspace.resolve()}/mlflow.db"  # shared by all experiments


def test_a_stale_lock_never_names_the_split(tmp_path, monkeypatch, caplog):
    """`olives stage split` re-run by hand after the lock: the file's own md5 is tagged."""
    tree = git_repo(tmp_path / "tree", b"new split", md5(b"the split the lock knows"))
    monkeypatch.chdir(tree)
    assert dvc_hash(SPLIT_INDEX) == md5(b"new split")
    assert "stale" in caplog.text
    (tree / "dvc.lock").unlink()
    assert dvc_hash(SPLIT_INDEX) == md5(b"new split")
    assert dvc_hash("data/cache") is None and dvc_hash("no/such/file") is None


def test_a_new_sqlite_store_opened_by_several_processes_at_once(tmp_path):
    """`dvc queue start -j 2` started two trains on a fresh store at once and one failed in
    MLflow's schema migration ('Online migration expected to match one row')."""
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    code = (
        "import mlflow, sys\n"
        "from olives.config import TrackingConfig\n"
        "from olives.tracking.runs import Tracker\n"
        "tracker = Tracker(TrackingConfig(tracking_uri=sys.argv[1], experiment='e'))\n"
        "with tracker.run(run_name='r'):\n"
        "    tracker.log_metrics({'m': 1.0})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=300)[1].decode()[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}


def register_version(client, run_id: str) -> object:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # exists
        client.create_registered_model(NAME)
    return client.create_model_version(NAME, f"runs:/{run_id}/model", run_id=run_id)


def trained_run(client, experiment: str, split: str | None, auroc: float) -> str:
    run = client.create_run(experiment, tags={"split_md5": split} if split else {})
    client.log_metric(run.info.run_id, "best_val_macro_auroc", auroc)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_champion_moves_only_within_a_split(tmp_path):
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db", experiment="c")
    tracker = Tracker(cfg)
    client = tracker.client()
    experiment = client.create_experiment("c")
    first = trained_run(client, experiment, "split-a", 0.6)
    assert "now on" in tracker.promote(NAME, "champion", register_version(client, first), first)
    for split, auroc in (("split-b", 0.99), (None, 0.99), ("split-a", 0.5)):
        run = trained_run(client, experiment, split, auroc)
        said = tracker.promote(NAME, "champion", register_version(client, run), run)
        assert "stays on version 1" in said
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    better = trained_run(client, experiment, "split-a", 0.7)
    version = register_version(client, better)
    assert "now on" in tracker.promote(NAME, "champion", version, better)
    assert client.get_model_version_by_alias(NAME, "champion").version == version.version


def test_evaluation_on_another_split_never_promotes(tmp_path, monkeypatch, caplog):
    """Test metrics of a split the model was not trained with cannot make it the champion."""
    tree = git_repo(tmp_path / "tree", b"split now", md5(b"split now"))
    monkeypatch.chdir(tree)
    params = from_dict(Params, {"split": {"out_dir": "data/split"}})
    assert track.same_split(params, md5(b"split now"))
    assert not track.same_split(params, md5(b"split at training time"))
    assert not track.same_split(params, None)
    assert "the champion stays" in caplog.text


# The real thing: a tiny copy of the pipeline, two queued experiments on different splits.

QUEUED = {**merge(TINY, {"evaluate": {"bootstrap": 10}}), "model": {"pretrained": "none"}}
FRACTIONS = {"exp-a": 0.4, "exp-b": 0.55}  # 8 training patients: 3 vs 4 in validation


def dvc(project: Path, env: dict, *args: str, timeout: int = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture()
def queued_project(tmp_path: Path):
    """A git + DVC repo on the tiny preset whose data stages ran in the workspace."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), QUEUED)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("__pycache__/\n")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    git(project, "init", "-q")
    dvc(project, env, "init", "-q")
    dvc(project, env, "repro", "split")  # the workspace's own split: what the bug tagged
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=project, env=env, check=True)
    yield project, env
    for args in (("queue", "kill", *FRACTIONS), ("queue", "stop", "--kill")):
        subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True
        )


def wait_for_queue(project: Path, env: dict, limit: float = 1500) -> str:
    """`dvc queue status` once nothing is queued or running (the workers exit when idle)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        status = dvc(project, env, "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(5)
    pytest.fail(f"the queue did not finish within {limit} s:\n{status}")


def locked_md5s(project: Path, experiment: str) -> dict[str, str]:
    """path -> md5 in the dvc.lock the experiment committed (its exp ref)."""
    refs = git(project, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    (ref,) = [r for r in refs if r.endswith(f"/{experiment}")]
    lock = yaml.safe_load(git(project, "show", f"{ref}:dvc.lock"))
    return {out["path"]: out["md5"] for s in lock["stages"].values() for out in s.get("outs", [])}


@pytest.mark.slow
def test_queued_experiments_tag_their_own_split(queued_project, monkeypatch):
    from mlflow import MlflowClient

    project, env = queued_project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])  # the Tracker's store
    for name, fraction in FRACTIONS.items():
        change = f"split.val_fraction={fraction}"
        dvc(project, env, "exp", "run", "--queue", "-n", name, "-S", change, "track")
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", "2"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,  # the detached workers keep inherited pipes open
        stderr=subprocess.DEVNULL,
        check=True,
    )
    status = wait_for_queue(project, env)
    logs = {name: dvc(project, env, "queue", "logs", name) for name in FRACTIONS}
    assert status.count("Success") == 2, f"{status}\n" + "\n".join(logs.values())

    locks = {name: locked_md5s(project, name) for name in FRACTIONS}
    workspace = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert len({lock[SPLIT_INDEX] for lock in locks.values()}) == 2  # two different splits
    assert workspace["split"]["outs"][0]["md5"] not in {
        lock[SPLIT_INDEX] for lock in locks.values()
    }

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(Params().tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags.get("dvc_exp") for r in runs) == sorted(FRACTIONS)
    for run in runs:
        lock = locks[run.data.tags["dvc_exp"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["split_md5"] == lock[SPLIT_INDEX]
        assert run.data.tags["cache_md5"] == lock["data/cache"]
        assert run.data.tags["git_commit"] == git(project, "rev-parse", "HEAD")
        assert "test_macro_auroc" in run.data.metrics  # track found its own run

    # The champion: the first evaluated version; the other, on another split, never takes it.
    holder = client.get_model_version_by_alias(NAME, "champion")
    other = next(
        v for v in client.search_model_versions(f"name='{NAME}'") if v.version != holder.version
    )
    tracker = Tracker(TrackingConfig(tracking_uri=env["MLFLOW_TRACKING_URI"]))
    assert "another split" in tracker.promote(NAME, "champion", other, other.run_id)
    assert client.get_model_version_by_alias(NAME, "champion").version == holder.version
