"""The MLflow model: a pyfunc that reads only what a client sends and answers every row.

Input, one row per B-scan: `image` (the encoded PNG/TIFF/JPEG file as base64 text; raw bytes
also work from Python) and optionally the raw clinical values the model was trained with
(`BCVA`, `CST`: ETDRS letters, µm), missing ones imputed and flagged as in training. Output,
one row per input row: per biomarker the calibrated probability `<L>_prob` and the decision
`<L>_pred` (0/1) at the tuned threshold, the imputation flags `<C>_imputed`, `error`,
`warning`, and which model answered: `model_version` (`olives-biomarkers/3`, looked up in the
registry when the server starts; null when it cannot be) and `model_sha256` (the model file's
SHA-256, what `olives predict` and the report print too). The model file travels as the
MLflow model's artifact and is run by the same `Predictor` as `olives predict`, so served and
local predictions are the same numbers.

    mlflow models serve -m models:/olives-biomarkers@champion --env-manager local -p 5001
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' -d \
      '{"dataframe_split": {"columns": ["image", "BCVA"], "data": [["<base64 PNG>", 71]]}}'

Rules, because the server answers anyone who can reach it:
- Server files are not read: a `path` row is an error row, unless the server process was
  started with `OLIVES_SERVE_ROOT=<folder>`. Then `path` is relative to that folder and
  confined to it (`olives.io.inside`, no `..`, links resolved), only regular files are opened
  (a FIFO or a device never is), and the size is checked before reading. Messages name only
  what the client sent: never the folder, nor whether a path outside it exists.
- Sizes are capped before any work (`olives.data.decode.DEFAULT_LIMITS.max_bytes`, on the
  base64 text before decoding; pixels by the `Predictor`), and a bad row is an error row:
  it never fails the batch. Memory stays bounded under concurrent requests: MLflow's server
  runs each request in a thread, and one request at a time is predicted (`PREDICTING`), its
  scans decoded on `DECODE_THREADS` threads.
- Every row gets an answer. A column other than `image`, `path` and the model's clinical
  ones (`Image`, `bcva`) makes every row an error row naming it, with a suggestion; a row
  with neither image nor path is an error row; an empty request (`[]`) answers no row, so
  answers map to rows by position. A clinical value that is no number or is implausible
  (`scans.clinical_values`, the rule `olives predict` applies) makes its row an error row,
  never an imputation.
- The answer is strict JSON: error rows carry null probabilities and decisions, never NaN;
  a column is numeric while complete and holds Python objects (None) once a value is
  missing, because MLflow writes NaN as the non-JSON token `NaN`.
- `predict` never raises: an unexpected error becomes error rows with a generic message and
  the traceback goes to the server log only (MLflow would put it in the HTTP answer).
- A body MLflow cannot parse is its JSON 400. JSON nested deeper than Python's recursion limit
  (~1000 levels) made MLflow's parser raise `RecursionError`, which its scoring server answers
  with a plain-text 500; loading the model wraps that parser (`olives.serving.guard`) so the answer
  is a JSON 400 too. A proxy in front should still cap the body size: MLflow sets no limit.

Why the model is logged with no input schema (`signature`): MLflow's schema enforcement drops
every column it does not know before `predict` runs (`Image` for `image` gave an empty 200
answer) and fails the whole batch with 400 over one mistyped cell. The pyfunc checks columns
and cells itself, row by row; the output schema and the logged input example document the
request. Models logged before this change keep their input schema, so MLflow still drops
unknown columns for them: re-run `train` to log the model again.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
import math
import os
import stat
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from olives.config import TrackingConfig
from olives.data.decode import DEFAULT_LIMITS
from olives.errors import InputError
from olives.io import file_sha256, inside
from olives.models import ModelBundle
from olives.runtime import Runtime
from olives.serving.guard import install_guards
from olives.serving.predictor import Predictor
from olives.serving.scans import Scan, clinical_values, read_regular
from olives.tracking.registry import ModelIdentity, identify
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

ARTIFACT = "bundle"
ROOT_ENV = "OLIVES_SERVE_ROOT"
DECODE_THREADS = 2  # decoding threads of the one request predicted at a time
PREDICTING = threading.Lock()  # MLflow runs requests in threads: one decodes at a time
REGISTERED = "registered_model"  # model_config key: the registered name (set by `track`)
IDENTITY = ("model_version", "model_sha256")  # answer columns naming the model
INTERNAL_ERROR = "internal error while predicting this row"
NO_FILES = "reading server files is disabled; send the image as base64 in 'image'"
SHOWN = 80  # characters of a client's value repeated in a message
NAMED = 5  # unknown columns named in a message


class RowError(InputError):
    """One request row (or the whole request) cannot be predicted; the message says why."""


class OlivesModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc` wrapper around `Predictor` (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        runtime = Runtime.from_env()
        path = Path(context.artifacts[ARTIFACT])
        bundle = ModelBundle.load(path, runtime.device)
        predictor = Predictor(bundle, runtime, model_id=path.name, decode_threads=DECODE_THREADS)
        install_guards()
        name = (getattr(context, "model_config", None) or {}).get(REGISTERED)
        self.setup(predictor, serve_root(), served_identity(file_sha256(path), name))

    def setup(
        self, predictor: Predictor, root: Path | None, identity: ModelIdentity | None = None
    ) -> None:
        """Ready to predict: the predictor, the folder `path` rows may read (None: none) and
        the identity every answer carries."""
        self.predictor, self.root = predictor, root
        self.identity = identity or ModelIdentity("")
        log.info("serving %s", self.identity.words())
        if root is not None:
            log.warning("%s is set: requests may read files under %s", ROOT_ENV, root)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        try:
            return self.answer(model_input)
        except Exception:  # never a traceback to the client: log it here instead
            log.exception("predict failed")
            failed = _failed(self.predictor.bundle, _request_size(model_input), INTERNAL_ERROR)
            return self.named(failed)

    def answer(self, model_input: Any) -> pd.DataFrame:
        bundle = self.predictor.bundle
        try:
            frame = table_of(model_input)
        except RowError as exc:
            return self.named(_failed(bundle, 1, str(exc)))
        if not len(frame):  # no row sent, none answered: answers map to rows by position
            return self.named(_failed(bundle, 0, ""))
        try:
            check_columns(frame.columns, _expected_columns(bundle.clinical))
        except RowError as exc:
            return self.named(_failed(bundle, len(frame), str(exc)))
        cap = DEFAULT_LIMITS.max_bytes
        scans = [
            row_scan(i, row, bundle.clinical, self.root, cap)
            for i, row in enumerate(frame.to_dict("records"))
        ]
        with PREDICTING:
            table = self.predictor.predict(scans)
        return self.named(_served(table, bundle))

    def named(self, answer: pd.DataFrame) -> pd.DataFrame:
        """The answer with the model's identity on every row."""
        answer["model_version"] = self.identity.registered
        answer["model_sha256"] = self.identity.sha256 or None
        return answer


def served_identity(sha256: str, name: str | None) -> ModelIdentity:
    """The registered version of the served file, from the store `MLFLOW_TRACKING_URI` names
    (the one `mlflow models serve -m models:/...` read it from); bare when unknown."""
    if not (name and os.environ.get("MLFLOW_TRACKING_URI")):
        return ModelIdentity(sha256)
    return identify(Tracker(TrackingConfig(registered_model=name)), sha256)


def serve_root() -> Path | None:
    """The folder named by `OLIVES_SERVE_ROOT`, or None when unset (no server file is read)."""
    text = os.environ.get(ROOT_ENV, "").strip()
    if not text:
        return None
    root = Path(text).resolve()
    if not root.is_dir():
        raise InputError(f"{ROOT_ENV}={text!r} is not a folder")
    return root


def _request_size(model_input: Any) -> int:
    """How many rows the client sent, as well as can be told (1 when it cannot)."""
    try:
        return len(table_of(model_input))
    except Exception:
        return 1


def table_of(model_input: Any) -> pd.DataFrame:
    """The request as a DataFrame (maybe of no row): MLflow passes a DataFrame for
    `dataframe_*` bodies and a dict, list or array for `inputs`/`instances`. Raises `RowError`
    for anything else."""
    return model_input if isinstance(model_input, pd.DataFrame) else _frame(model_input)


def _frame(data: Any) -> pd.DataFrame:
    if isinstance(data, dict):  # `inputs`: columns of values, or one record of 0-d arrays
        data = {
            k: v.item() if isinstance(v, np.ndarray) and not v.ndim else v for k, v in data.items()
        }
        if not any(isinstance(v, (list, tuple, np.ndarray, pd.Series)) for v in data.values()):
            data = [data]
    elif not isinstance(data, (list, np.ndarray)):
        raise RowError("the request is not a table of rows; send 'dataframe_records'")
    try:
        return pd.DataFrame(data)
    except (ValueError, TypeError) as exc:
        raise RowError(f"the request is not a table of rows ({exc})") from None


def _expected_columns(clinical: Sequence[str]) -> list[str]:
    return ["image", "path", *clinical]


def check_columns(columns: Sequence[Any], expected: list[str]) -> None:
    """Every column is one the model reads: no silent drop of a misspelt `Image` or `bcva`."""
    names = [str(c) for c in columns]
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        raise RowError(f"column {_shown(twice[0])} appears more than once")
    strange = [name for name in names if name not in expected]
    if strange:
        problems = [_unknown(name, expected) for name in strange[:NAMED]]
        if len(strange) > NAMED:
            problems.append(f"{len(strange) - NAMED} more unknown columns")
        raise RowError("; ".join(problems) + f" (expected: {', '.join(expected)})")


def _unknown(name: str, expected: list[str]) -> str:
    """'unknown column 'Image'; did you mean 'image'?' (case first, then spelling)."""
    same_case = [e for e in expected if e.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name.lower(), [e.lower() for e in expected], 1)
    hint = next((e for e in expected if close and e.lower() == close[0].lower()), None)
    return f"unknown column {_shown(name)}" + (f"; did you mean {hint!r}?" if hint else "")


def _shown(value: Any) -> str:
    """A client's value quoted for a message, cut to `SHOWN` characters."""
    text = str(value)
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _missing(value: Any) -> bool:
    """A cell with no value: None, or the NaN pandas puts where a record lacks a key."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def row_scan(
    i: int, row: dict[str, Any], clinical: Sequence[str], root: Path | None, max_bytes: int
) -> Scan:
    """One request row as a `Scan`; what cannot be read becomes its `error`, never a raise."""
    scan = Scan(f"row {i}")
    try:
        scan.clinical, problem = clinical_values(row, clinical)  # numbers, plausible
        if problem:
            raise RowError(problem)
        image, path = row.get("image"), row.get("path")
        if not _missing(image) and not _missing(path):
            raise RowError("give 'image' or 'path', not both")
        if not _missing(image):
            scan.data = image_bytes(image, max_bytes)
        elif not _missing(path):
            scan.data = served_file(root, path, max_bytes)
        else:
            raise RowError("neither 'image' nor 'path' given")
    except RowError as exc:
        scan.data, scan.error = None, f"row {i}: {exc}"
    return scan


def image_bytes(image: Any, max_bytes: int) -> bytes:
    """The encoded image from base64 text (line breaks allowed) or raw bytes, its length
    checked against `max_bytes` before anything is decoded."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) > max_bytes:
            raise RowError(f"'image' is {len(image)} bytes, over the limit of {max_bytes} bytes")
        return bytes(image)
    if not isinstance(image, str):
        raise RowError(f"'image' must be base64 text, got {type(image).__name__}")
    limit = 4 * -(-max_bytes // 3)  # base64 characters of max_bytes bytes
    text = image if len(image) > 2 * limit else "".join(image.split())
    if len(text) > limit:
        raise RowError(f"'image' is over the limit of {max_bytes} bytes ({len(text)} characters)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RowError("'image' is not base64 text") from None


def served_file(root: Path | None, name: Any, max_bytes: int) -> bytes:
    """The bytes of `name` under `root` (`OLIVES_SERVE_ROOT`); see the module docstring."""
    if root is None:
        raise RowError(NO_FILES)
    if not isinstance(name, str):
        raise RowError(f"'path' must be text, got {type(name).__name__}")
    quoted = _shown(name)
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.anchor:
        raise RowError(f"path {quoted} is absolute: give it relative to {ROOT_ENV}")
    if "\x00" in name or ".." in posix.parts + windows.parts:
        raise RowError(f"path {quoted} is not allowed: give it relative to {ROOT_ENV}, no '..'")
    try:
        resolved = inside(root, name).resolve()  # a link out of the folder, a link loop
        info = os.stat(resolved)
    except InputError:
        raise RowError(f"path {quoted} leads outside {ROOT_ENV} or cannot be resolved") from None
    except FileNotFoundError:
        raise RowError(f"path {quoted} is not found in the served folder") from None
    except (OSError, RuntimeError, ValueError):  # a link loop, a long name, no permission
        raise RowError(f"path {quoted} cannot be read") from None
    problem = _file_problem(info, max_bytes)
    if problem:
        raise RowError(f"path {quoted} {problem}")
    try:
        return read_regular(resolved, max_bytes)  # stat again, open non-blocking, read the cap
    except InputError:  # it changed since stat; its message names the server path
        raise RowError(f"path {quoted} cannot be read") from None


def _file_problem(info: os.stat_result, max_bytes: int) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size > max_bytes:
        return f"is {info.st_size} bytes, over the limit of {max_bytes} bytes"
    if info.st_size == 0:
        return "is an empty file"
    return None


def _output_columns(bundle: ModelBundle) -> list[str]:
    columns = [f"{n}{s}" for n in bundle.labels for s in ("_prob", "_pred")]
    return columns + [f"{c}_imputed" for c in bundle.clinical] + ["error", "warning"]


def _served(table: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    """The `Predictor` table as the answer: error rows carry only their error, decisions are
    0/1, and a row the model gave no finite probability for is an error row."""
    out = pd.DataFrame(index=table.index)
    probs = table[[f"{n}_prob" for n in bundle.labels]].to_numpy(dtype="float64")
    error = table["error"].astype(object).where(table["error"].notna(), None)
    unusable = error.isna() & ~np.isfinite(probs).all(axis=1)
    error[unusable] = "the model gave no finite probability for this row"
    ok = error.isna().to_numpy()
    for j, name in enumerate(bundle.labels):
        out[f"{name}_prob"] = pd.Series(probs[:, j], index=table.index).where(ok)
        out[f"{name}_pred"] = table[f"{name}_pred"].astype("float64").where(ok)
    for name in bundle.clinical:
        out[f"{name}_imputed"] = table[f"{name}_imputed"].astype("float64").where(ok)
    out["error"] = error
    out["warning"] = table.get("warning")
    return json_safe(out, integers=[c for c in out if c.endswith(("_pred", "_imputed"))])


def _failed(bundle: ModelBundle, rows: int, message: str) -> pd.DataFrame:
    """`rows` error rows carrying `message` (a request that cannot be read as a whole)."""
    out = pd.DataFrame({name: [None] * rows for name in _output_columns(bundle)}, dtype=object)
    out["error"] = message
    return out


def json_safe(frame: pd.DataFrame, integers: Sequence[str]) -> pd.DataFrame:
    """Columns MLflow writes as strict JSON: a complete column keeps a numeric dtype (int64
    for `integers`); one with a missing or non-finite value holds Python objects and None."""
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind == "f":
            column = column.where(np.isfinite(column))
            if column.notna().all():
                out[name] = column.astype("int64") if name in integers else column
                continue
        values = [None if _missing(v) else _plain(v, name in integers) for v in column]
        out[name] = pd.Series(values, index=frame.index, dtype=object)
    return out


def _plain(value: Any, integer: bool) -> Any:
    """A numpy scalar as the Python value json writes (an int for a decision or flag)."""
    value = value.item() if isinstance(value, np.generic) else value
    return int(value) if integer and isinstance(value, (int, float)) else value


def signature(bundle: ModelBundle) -> ModelSignature:
    """Outputs only: no input schema, so MLflow passes every column to `predict` (see the
    module docstring); the logged input example shows the request."""
    outputs = []
    for name in bundle.labels:
        outputs += [
            ColSpec("double", f"{name}_prob", required=False),
            ColSpec("long", f"{name}_pred", required=False),
        ]
    outputs += [ColSpec("long", f"{name}_imputed", required=False) for name in bundle.clinical]
    outputs += [ColSpec("string", "error", required=False)]
    outputs += [ColSpec("string", "warning", required=False)]
    outputs += [ColSpec("string", name, required=False) for name in IDENTITY]
    return ModelSignature(inputs=None, outputs=Schema(outputs))


def example(image: bytes, bundle: ModelBundle) -> pd.DataFrame:
    """A request row as a client sends it: a base64 PNG and missing clinical values."""
    row: dict[str, Any] = {"image": base64.b64encode(image).decode("ascii")}
    row |= {name: None for name in bundle.clinical}
    return pd.DataFrame([row])


# What MLflow's inference found this model to import (`mlflow.pyfunc.log_model` without
# `pip_requirements` runs the model in a subprocess to find out: 8 of `track`'s 13 s on 2
# cores); the olives distribution brings torch, timm and the rest.
REQUIREMENTS = (
    "mlflow",
    "cloudpickle",
    "numpy",
    "olives-biomarkers",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
)


def requirements() -> list[str]:
    """The served model's pip requirements, pinned to this environment's versions."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in REQUIREMENTS]
