"""Small file helpers every stage shares: JSON files, output folders, JSON-ready numbers."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any


def write_json(path: str | Path, data: Any) -> Path:
    """Pretty JSON with a trailing newline (stable bytes for DVC and git)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def reset_dir(path: str | Path) -> Path:
    """Empty `path` (a stage output), so nothing stale from an earlier run survives."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def none_if_nan(value: Any) -> float | None:
    """A JSON-ready number: None for None or NaN (an undefined metric), else a float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (identifies a model file across stages and MLflow)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
