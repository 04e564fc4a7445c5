"""`check`: params.yaml is valid before any stage runs (the first stage of `dvc repro`).

DVC deletes a stage's outputs before running it, and reads `params.yaml` itself: a mistyped or
missing key used to cost `data/raw/` before any friendly message. This stage depends on
params.yaml and `download` depends on its output, so DVC runs it first: an unknown key (`olives`
loads params.yaml strictly and says "did you mean ...") or a missing one (params.yaml states
every parameter: `tests/test_dvc.py`) stops `dvc repro` here, with nothing deleted. Its output
never changes, so passing the check reruns nothing downstream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from olives.config import ConfigError, Params, flatten

log = logging.getLogger(__name__)

PARAMS: tuple[str, ...] = ()  # all of params.yaml is a file dep
OUT = Path("data/params_checked.txt")
STAMP = "params.yaml passed `olives check`: every key known, none missing.\n"


def run(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """`params` were loaded strictly (unknown keys, types); here: none is missing from
    `root/params.yaml`."""
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    for key, default in flatten(Params()).items():
        if not has_key(raw, key):
            raise ConfigError(
                f"params.yaml: '{key}' is missing (its default: {default!r}); every parameter "
                "is stated there: restore it, e.g. from `git show HEAD:params.yaml`"
            )
    (root / OUT).parent.mkdir(parents=True, exist_ok=True)
    (root / OUT).write_text(STAMP)
    log.info("params.yaml: valid")
    return {"checked": True}


def has_key(raw: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True
