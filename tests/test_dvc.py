"""DVC that cannot go stale: code deps are exactly the imports, params exactly the result keys,
and the committed dvc.lock files match the tree (so committed results come from this code)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imports import SRC, closure_files
from olives.config import Params, flatten, load_params, select

REPO = SRC.parent
PIPELINES = {
    "dvc.yaml": REPO / "dvc.yaml",
    "paper/dvc.yaml": REPO / "paper/dvc.yaml",
    "paper/teacher/dvc.yaml": REPO / "paper/teacher/dvc.yaml",
}
# Keys that change how a stage runs, never what it writes.
RUNTIME_KEYS = (
    "data.raw_dir",
    "data.report",
    "data.synthetic.num_workers",
    "preprocess.num_workers",
    "preprocess.batch_rows",
    "preprocess.cache_dir",
    "preprocess.report",
    "split.out_dir",
    "pretrain.out_dir",
    "pretrain.checkpoint_dir",
    "train.check_initial_loss",
    "train.cudnn_benchmark",
    "train.device_cache",
    "train.num_threads",
    "train.progress",
    "train.resume",
    "train.checkpoint_dir",
    "train.model_dir",
    "train.report_dir",
    "tracking",
    "evaluate.out_dir",
    "paper.out_dir",
    "paper.data.dir",
    "report.out_dir",
)


def stage_module(pipeline: str, name: str) -> str:
    """`olives.stages.train` for the main pipeline, `olives.stages.paper.ablate` for the paper's."""
    return f"olives.stages.{'' if pipeline == 'dvc.yaml' else 'paper.'}{name}"


def stages() -> list[tuple[str, str, dict]]:
    """(pipeline, stage name, raw stage definition) for every stage of both pipelines."""
    out = []
    for pipeline, path in PIPELINES.items():
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            out.append((pipeline, name, stage))
    return out


STAGES = stages()
IDS = [f"{pipeline}:{name}" for pipeline, name, _ in STAGES]


def code_deps(stage: dict) -> list[Path]:
    return [REPO / d for d in stage.get("deps", []) if str(d).startswith("src/")]


@pytest.mark.parametrize(("pipeline", "name", "stage"), STAGES, ids=IDS)
def test_code_deps_are_exactly_the_modules_the_stage_imports(pipeline, name, stage):
    imported = closure_files(stage_module(pipeline, name))
    deps = code_deps(stage)
    uncovered = sorted(
        str(f.relative_to(REPO))
        for f in imported
        if not any(f == d or d in f.parents for d in deps)
    )
    assert not uncovered, f"{pipeline} stage {name} imports modules not in its deps: {uncovered}"
    for dep in deps:
        files = set(dep.rglob("*.py")) if dep.is_dir() else {dep}
        assert files and files <= imported, (
            f"{pipeline} stage {name}: dep {dep.relative_to(REPO)} holds code the stage does "
            f"not import: {sorted(str(f.relative_to(REPO)) for f in files - imported)}"
        )


def expand(keys) -> set[str]:
    return set(select(load_params(REPO / "params.yaml"), keys))


@pytest.mark.parametrize(("pipeline", "name", "stage"), STAGES, ids=IDS)
def test_params_deps_are_the_keys_that_change_results(pipeline, name, stage):
    module = importlib.import_module(stage_module(pipeline, name))
    declared = expand(stage.get("params", []))
    assert declared == expand(module.PARAMS), f"{pipeline} stage {name}"
    runtime = expand(RUNTIME_KEYS)
    assert not declared & runtime, f"runtime knobs are deps of {name}: {declared & runtime}"


def test_every_parameter_is_a_dependency_or_a_runtime_knob():
    """A new key must be classified: it changes some stage's results or it does not."""
    used = set().union(
        *(
            expand(importlib.import_module(stage_module(p, n)).PARAMS)
            for p, n, _ in STAGES
            if n != "aggregate"
        )
    )
    grid = {  # the matrices themselves (stage names)
        "paper.fusions",
        "paper.losses",
        "paper.seeds",
        "paper.init.inits",
        "paper.init.modes",
    }
    every = set(flatten(Params()))
    assert every - used - expand(RUNTIME_KEYS) - grid == set()


def test_params_yaml_states_every_default():
    """Defaults live in one place: params.yaml equals the config dataclasses, key for key."""
    from_file = flatten(load_params(REPO / "params.yaml"))
    assert from_file == flatten(Params())
    raw = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert set(raw) == set(from_file)  # no key left to a hidden default


def dvc_status() -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout or "{}")


def stale_entries(status: dict) -> list[str]:
    """Code or params changed since the lock, a changed command, or a committed (git-tracked)
    output that differs from it. Missing data (a fresh clone) is not staleness."""
    problems = []
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):
                if entry != "always changed":  # `track` runs on every repro by design
                    problems.append(f"{stage}: {entry}")
                continue
            for path, state in entry.get("changed deps", {}).items():
                code = isinstance(state, dict) or path.startswith("src/")  # params, code
                tracked_file = (REPO / path).is_file() and tracked_by_git(path)  # params.yaml
                if code or (state == "modified" and tracked_file):
                    problems.append(f"{stage}: dep {path} {state}")
            for path, state in entry.get("changed outs", {}).items():
                if state == "modified" and tracked_by_git(path):
                    problems.append(f"{stage}: committed output {path} modified")
    return problems


def tracked_by_git(path: str) -> bool:
    listed = subprocess.run(
        ["git", "ls-files", "--", path], cwd=REPO, capture_output=True, text=True, check=False
    )
    return bool(listed.stdout.strip())


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_committed_lock_files_match_the_tree():
    """Every code and params hash in dvc.lock and paper/dvc.lock is the tree's, and every
    committed output is the one the lock records."""
    problems = stale_entries(dvc_status())
    assert not problems, "regenerate with `make repro` / `make paper`:\n" + "\n".join(problems)
