"""The JSON body of a request to the served model, built from image files: what
`olives request scan.png > request.json` writes for `curl -d @request.json`.

A file, not a shell argument: the base64 of one real 504 x 496 B-scan is larger than the
shell's argument limit (`curl: Argument list too long`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from olives.data.decode import DEFAULT_LIMITS
from olives.data.schema import clinical_problem
from olives.errors import InputError
from olives.io import read_regular


def request_body(
    images: Sequence[str | Path], clinical: Mapping[str, float | None] | None = None
) -> dict[str, Any]:
    """`{"dataframe_split": ...}` with one row per image (base64) and the same clinical values
    on every row (None: missing, imputed by the model); checked as the server checks them."""
    values = dict(clinical or {})
    for name, value in values.items():
        problem = clinical_problem(name, value)
        if problem:
            raise InputError(problem)
    rows = []
    for image in images:
        data = read_regular(Path(image), DEFAULT_LIMITS.max_bytes)
        rows.append([base64.b64encode(data).decode("ascii"), *values.values()])
    return {"dataframe_split": {"columns": ["image", *values], "data": rows}}
