"""`check`: params.yaml is valid before any stage runs (the first stage of `dvc repro`).

DVC deletes a stage's outputs before running it, and reads `params.yaml` itself: a mistyped or
missing key used to cost `data/raw/` before any friendly message. This stage depends on
params.yaml and dvc.yaml, and `download` depends on its output, so DVC runs it first: an unknown
key (`olives` loads params.yaml strictly and says "did you mean ...") or a key a stage lists but
params.yaml lacks stops `dvc repro` here, with nothing deleted. Its output never changes, so
passing the check reruns nothing downstream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from olives.config import ConfigError, Params

log = logging.getLogger(__name__)

PARAMS: tuple[str, ...] = ()  # all of params.yaml is a file dep
OUT = Path("data/params_checked.txt")
STAMP = "params.yaml passed `olives check`: every key known, every key a stage uses present.\n"
PIPELINES = ("dvc.yaml", "paper/dvc.yaml")


def run(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """`params` were loaded strictly (unknown keys, types); here: no key a stage uses is
    missing from `root/params.yaml`."""
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    for pipeline in PIPELINES:
        if (root / pipeline).is_file():
            for stage, key in stage_params(yaml.safe_load((root / pipeline).read_text())):
                if not has_key(raw, key):
                    raise ConfigError(
                        f"params.yaml: '{key}' is missing (stage '{stage}' of {pipeline} uses "
                        "it); restore it, e.g. `git checkout -- params.yaml`"
                    )
    (root / OUT).parent.mkdir(parents=True, exist_ok=True)
    (root / OUT).write_text(STAMP)
    log.info("params.yaml: valid")
    return {"checked": True}


def stage_params(pipeline: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(stage, key) for every params.yaml key a stage of a dvc.yaml lists."""
    for name, stage in (pipeline.get("stages") or {}).items():
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                yield name, entry
            elif isinstance(entry, dict):  # {other_file.yaml: [keys]}: not params.yaml
                for key in entry.get("params.yaml", None) or []:
                    yield name, key


def has_key(raw: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True
