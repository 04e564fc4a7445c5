"""The whole DVC pipeline, download → report, on the tiny synthetic preset in a scratch copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {
        "synthetic": {
            "preset": "tiny",
            "patients": 8,
            "test_patients": 3,
            "width": 128,
            "height": 124,
            "num_workers": 1,
        }
    },
    "preprocess": {"height": 48, "width": 48},
    "split": {"candidates": 4},
    "train": {"epochs": 1, "batch_size": 16, "progress": False},
    "evaluate": {"bootstrap": 50},
    "report": {"gallery_size": 2},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, dict]:
    """`dvc repro` of the tiny preset in a committed git + DVC copy, its MLflow store where
    the README's commands expect it (`<repo>/mlflow.db`): the newcomer's state after `make
    repro`."""
    project = tmp_path_factory.mktemp("pipeline") / "project"
    project.mkdir()
    for name in ("dvc.yaml", "src"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("__pycache__/\nmlflow.db\nmlartifacts/\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=project, env=env, check=True)
    subprocess.run([*DVC, "init", "-q"], cwd=project, env=env, check=True)
    result = subprocess.run([*DVC, "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "repro"], cwd=project, env=env, check=True)
    return project, env


DVC = [sys.executable, "-m", "dvc"]


def test_dvc_repro_runs_every_stage(reproduced):
    project, env = reproduced
    raw = json.loads((project / "data/raw_report.json").read_text())
    assert raw["source"] == "synthetic" and set(raw["splits"]) == {"train", "test"}
    splits = json.loads((project / "data/split/splits.json").read_text())
    patients = [set(part["patients"]) for part in splits["splits"].values()]
    assert sum(map(len, patients)) == len(set().union(*patients))  # no patient in two splits
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["n_images"] == raw["splits"]["test"]["labelled_rows"]
    report = (project / "reports/report.md").read_text()
    assert "## 2. Results per B-scan" in report and "Not comparable" in report
    assert "## 3. Results per volume" in report and "test volumes (patient x eye x visit)" in report
    assert (project / "models/model.safetensors").is_file()
    assert (project / "reports/plots/roc").is_dir()
    summary = json.loads((project / "reports/summary.json").read_text())
    assert summary["test_auroc"] == metrics["macro"]["auroc"]
    assert summary["vip2"] == metrics["vip_phase2"]

    # olives predict on the raw test shards gives evaluate's numbers: same decoding, resizing,
    # clinical statistics, calibration and thresholds.
    command = [sys.executable, "-m", "olives", "predict", "data/raw/test", "--out", "again.csv"]
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    again = pd.read_csv(project / "again.csv").set_index("source")
    evaluated = pd.read_csv(project / "reports/predictions.csv").set_index("path")
    probs = [f"{name}_prob" for name in metrics["labels"]]
    assert len(again) == len(evaluated)
    np.testing.assert_allclose(again.loc[evaluated.index, probs], evaluated[probs], atol=2e-6)

    status = subprocess.run(
        [*DVC, "status"], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    assert status.stdout.split() == ["track:", "always", "changed"]  # the lock covers the rest


MARKER = "<!-- tested: tests/test_pipeline.py runs this block -->\n```bash\n"


def marked_blocks() -> dict[str, list[str]]:
    """The shell blocks marked as tested in README.md and docs/*.md, in order, by page."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    blocks = {}
    for page in pages:
        parts = page.read_text().split(MARKER)[1:]
        if parts:
            blocks[str(page.relative_to(REPO))] = [part.split("```", 1)[0] for part in parts]
    return blocks


def way_back_block() -> str:
    """The docs' way back to the committed state after an experiment."""
    (block,) = [b for b in marked_blocks()["docs/experiments.md"] if b.startswith("git checkout")]
    return block


def bash(project: Path, env: dict, script: str, timeout: int = 600) -> str:
    """`script` as a user types it, in `project`; background jobs are stopped at the end.
    Returns what it printed (stdout, then stderr)."""
    wrapped = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    result = subprocess.run(
        ["bash", "-c", wrapped],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def test_documented_day_two_commands_work_as_written(reproduced, tmp_path, monkeypatch):
    """Compare (docs/experiments.md), serve the champion with the README's request, predict the
    same scan, run an experiment and take the way back (docs/experiments.md): one model
    identity throughout (issue 20's acceptance)."""
    from olives.config import TrackingConfig
    from olives.io import file_sha256
    from olives.tracking.registry import identify
    from olives.tracking.runs import Tracker
    from test_training import free_port

    project, env = reproduced
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store below, as in `env`
    blocks = marked_blocks()
    assert sum(map(len, blocks.values())) == 3, blocks
    (compare,) = [b for b in blocks["docs/experiments.md"] if b.startswith("olives compare")]
    (serve,) = [b for b in blocks["README.md"] if "mlflow models serve" in b]
    way_back = way_back_block()
    assert "test_macro_auroc" in bash(project, env, compare)

    images = np.load(project / "data/cache/images.npy", mmap_mode="r")
    from PIL import Image

    Image.fromarray(np.asarray(images[0])).save(project / "scan.png")
    answer = bash(project, env, serve.replace("5001", str(free_port())))
    body, _ = json.JSONDecoder().raw_decode(answer[answer.index('{"predictions"') :])
    served = pd.DataFrame(body["predictions"])
    local = pd.read_csv(project / "scan.csv")
    probs = [c for c in local if c.endswith("_prob")]
    np.testing.assert_allclose(served[probs].to_numpy(), local[probs].to_numpy(), atol=1e-6)
    sha = file_sha256(project / "models/model.safetensors")
    assert served["model_sha256"].item() == sha == local["model_sha256"].item()
    assert served["model_version"].item() == "olives-biomarkers/1"

    store = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{project}/mlflow.db"))
    ran = bash(project, env, "dvc exp run -S train.epochs=2")
    experiment = file_sha256(project / "models/model.safetensors")
    assert experiment != sha
    assert identify(store, experiment).version == "2", ran[-3000:]
    bash(project, env, way_back)
    assert file_sha256(project / "models/model.safetensors") == sha
    assert identify(store, sha).is_champion  # the served model is the workspace's again


def test_way_back_after_a_failed_experiment(reproduced, monkeypatch):
    """An experiment that fails offline deletes the download stage's outputs first (data/raw
    and the git-tracked data/raw_report.json); the docs' way back restores every tracked
    output, the workspace's model and its champion (issue 27)."""
    from olives.config import TrackingConfig
    from olives.io import file_sha256
    from olives.tracking.registry import identify
    from olives.tracking.runs import Tracker

    project, env = reproduced
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store below, as in `env`
    git_status = ["git", "status", "--porcelain"]
    before = subprocess.run(git_status, cwd=project, env=env, capture_output=True, text=True)
    assert all(line.startswith("??") for line in before.stdout.splitlines()), before.stdout
    sha = file_sha256(project / "models/model.safetensors")
    offline = env | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    failed = subprocess.run(
        [*DVC, "exp", "run", "-S", "data.source=huggingface"],
        cwd=project,
        env=offline,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert not (project / "data/raw_report.json").exists()  # what the way back must restore

    bash(project, env, way_back_block())
    after = subprocess.run(git_status, cwd=project, env=env, capture_output=True, text=True)
    assert after.stdout == before.stdout  # nothing tracked changed, nothing new left behind
    status = subprocess.run(
        [*DVC, "status", "dvc.yaml"], cwd=project, env=env, capture_output=True, text=True
    )
    assert status.stdout.split() == ["track:", "always", "changed"], status.stdout
    assert file_sha256(project / "models/model.safetensors") == sha
    store = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{project}/mlflow.db"))
    assert identify(store, sha).is_champion
