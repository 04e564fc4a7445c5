"""The MLflow model: a pyfunc whose input is what a client has.

Input, a DataFrame with one row per B-scan: `image` (the encoded PNG/TIFF/JPEG file, base64
text; raw bytes also work from Python) or `path` (a file the server can read), and optionally
the raw clinical values (`BCVA`, `CST`: ETDRS letters, µm), missing ones imputed and flagged as
in training. Output: per biomarker the calibrated probability `<L>_prob` and the decision at
the tuned threshold `<L>_pred`, the imputation flags `<C>_imputed`, and `error` for a row that
could not be read. The model file travels as the MLflow model's artifact and is run by the
same `Predictor` as `olives predict`, so served and local predictions are the same numbers.

    mlflow models serve -m models:/olives-biomarkers/1 --env-manager local -p 5001
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' -d \
      '{"dataframe_split": {"columns": ["image", "BCVA"], "data": [["<base64 PNG>", 71]]}}'
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from olives.models import ModelBundle
from olives.runtime import Runtime
from olives.serving.predictor import Predictor
from olives.serving.scans import Scan, number

ARTIFACT = "bundle"


class OlivesModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc` wrapper around `Predictor` (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        runtime = Runtime.from_env()
        path = Path(context.artifacts[ARTIFACT])
        bundle = ModelBundle.load(path, runtime.device)
        self.predictor = Predictor(bundle, runtime, model_id=path.name)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        bundle = self.predictor.bundle
        scans = [row_scan(i, row, bundle.clinical) for i, row in enumerate(records(model_input))]
        table = self.predictor.predict(scans)
        columns = [f"{n}{s}" for n in bundle.labels for s in ("_prob", "_pred")]
        columns += [f"{c}_imputed" for c in bundle.clinical] + ["error"]
        out = table[columns].copy()
        for name in bundle.labels:  # JSON-friendly: no pandas NA in the served answer
            out[f"{name}_pred"] = out[f"{name}_pred"].astype("float64")
        return out


def records(model_input: pd.DataFrame | dict | list) -> list[dict[str, Any]]:
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    return frame.to_dict("records")


def row_scan(i: int, row: dict[str, Any], clinical: tuple[str, ...]) -> Scan:
    """One request row as a `Scan`: decoded base64 / bytes, or the file at `path`."""
    values = {name: number(row.get(name)) for name in clinical}
    image, path = row.get("image"), row.get("path")
    if isinstance(image, (bytes, bytearray)):
        return Scan(f"row {i}", data=bytes(image), clinical=values)
    if isinstance(image, str) and image:
        try:
            return Scan(f"row {i}", data=base64.b64decode(image, validate=True), clinical=values)
        except (binascii.Error, ValueError):
            return Scan(f"row {i}", clinical=values, error=f"row {i}: 'image' is not base64")
    if isinstance(path, str) and path:
        try:
            return Scan(path, data=Path(path).read_bytes(), clinical=values)
        except OSError as exc:
            return Scan(path, clinical=values, error=f"row {i}: cannot read {path}: {exc}")
    return Scan(f"row {i}", clinical=values, error=f"row {i}: neither 'image' nor 'path' given")


def signature(bundle: ModelBundle) -> ModelSignature:
    inputs = [ColSpec("string", "image", required=False), ColSpec("string", "path", required=False)]
    inputs += [ColSpec("double", name, required=False) for name in bundle.clinical]
    outputs = []
    for name in bundle.labels:
        outputs += [ColSpec("double", f"{name}_prob"), ColSpec("double", f"{name}_pred")]
    outputs += [ColSpec("long", f"{name}_imputed") for name in bundle.clinical]
    outputs.append(ColSpec("string", "error", required=False))
    return ModelSignature(Schema(inputs), Schema(outputs))


def example(image: bytes, bundle: ModelBundle) -> pd.DataFrame:
    """A request row as a client sends it: a base64 PNG and missing clinical values."""
    row: dict[str, Any] = {"image": base64.b64encode(image).decode("ascii")}
    row |= {name: None for name in bundle.clinical}
    return pd.DataFrame([row])
