"""What every source of the `download` stage yields: rows (or why a row is bad), the files a
local folder lists but lacks, and the one error type for a source that cannot be read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from olives.errors import InputError

OFFLINE_HINT = (
    "Offline sources: set `data.source: synthetic` (the embedded default generator) or "
    "`data.source: local` with `data.local.path` pointing at an ImageFolder (images + "
    "metadata.csv) or a folder of parquet files already downloaded from the hub."
)


class SourceError(InputError, RuntimeError):
    """A source could not be read: unreachable hub, missing folder, bad table."""


Row = tuple[str, "dict[str, Any] | InputError", str]  # split, row (or why it is bad), where
PRESENT, MISSING, EMPTY = "present", "missing", "empty"  # what a listed file is found to be


@dataclass
class Listed:
    """The listed files a local folder lacks or holds empty, for the download report."""

    missing: list[dict[str, Any]] = field(default_factory=list)
    empty: list[dict[str, Any]] = field(default_factory=list)


def blank(value: Any) -> bool:
    """An absent cell: None or NaN (pandas' missing value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
