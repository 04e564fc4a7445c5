"""A mistyped or missing key in params.yaml stops `dvc repro` at the `check` stage, with the
"did you mean" line, before DVC deletes any output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olives.config import ConfigError, Params, load_params
from olives.stages import check
from test_pipeline import REPO, TINY, merge


def test_a_key_a_stage_uses_must_be_present(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["data"]["synthetic"]["difficulty"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"'data\.synthetic\.difficulty' is missing"):
        check.run(load_params(tmp_path / "params.yaml"), tmp_path)
    assert not (tmp_path / check.OUT).exists()


def test_the_repository_params_pass_and_the_stamp_never_changes(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    check.run(Params(), tmp_path)
    assert (tmp_path / check.OUT).read_text() == (REPO / check.OUT).read_text() == check.STAMP


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dvc_repro_with_a_typo_deletes_nothing(tmp_path):
    """The issue's case: `sorce:` for `source:`; DVC used to delete data/raw first."""
    project = tmp_path / "project"
    (project / "paper").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(REPO / "paper/dvc.yaml", project / "paper/dvc.yaml")
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (("git", "init", "-q"), (sys.executable, "-m", "dvc", "init", "-q")):
        assert run(project, *args).returncode == 0
    done = run(project, sys.executable, "-m", "dvc", "repro", "download")
    assert done.returncode == 0, done.stderr
    raw = sorted(p.name for p in (project / "data/raw").rglob("*"))
    assert raw and (project / "data/raw_report.json").is_file()

    text = (project / "params.yaml").read_text().replace("  source: ", "  sorce: ", 1)
    (project / "params.yaml").write_text(text)
    failed = run(project, sys.executable, "-m", "dvc", "repro", "download")
    assert failed.returncode != 0
    said = failed.stdout + failed.stderr
    assert "unknown parameter 'data.sorce' (did you mean 'data.source'?)" in said
    assert sorted(p.name for p in (project / "data/raw").rglob("*")) == raw  # nothing lost
    assert (project / "data/raw_report.json").is_file()
