"""Where `olives predict --model` points: a local model file or folder, or an MLflow URI.

Looked up before anything is created or downloaded, so a wrong `--model` is one line naming
where it looked and what to pass, never a traceback:
- a path: the absolute path searched (a relative `models` is relative to the working folder,
  not to the repository);
- `models:/NAME...` and `runs:/...`: the store is `MLFLOW_REGISTRY_URI`, else the tracking
  store (`MLFLOW_TRACKING_URI`, else the project's `mlflow.db`, `olives.tracking.runs`). A
  SQLite store whose file does not exist is refused before MLflow connects (connecting would
  create an empty database); a store without the registered model names the ones it holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from olives.config import TrackingConfig
from olives.errors import InputError
from olives.models.bundle import FILE as MODEL_FILE
from olives.tracking.runs import check_reachable, project_root, resolve_tracking_uri

URI_SCHEMES = ("models:/", "runs:/")
SHOWN_MODELS = 10  # registered models named in a message


def model_file(spec: str) -> Path:
    """The local model file `--model` names (an MLflow model is downloaded first)."""
    if spec.startswith(URI_SCHEMES):
        return downloaded(spec)
    path = Path(spec)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise InputError(_not_found(spec, path))
    return path


def _not_found(spec: str, path: Path) -> str:
    """'--model models: model file not found at /abs/models/...; pass ...'."""
    name = TrackingConfig().registered_model
    repo = project_root() / "models"
    folder = str(repo) if (repo / MODEL_FILE).is_file() else "<repo>/models"
    return (
        f"--model {spec}: model file not found at {Path(os.path.abspath(path))}; pass the "
        f"folder `dvc repro` trains into (--model {folder}) or a registered model "
        f"(--model models:/{name}@champion with MLFLOW_TRACKING_URI naming its store)"
    )


def store_uri() -> str:
    """The store an MLflow URI is read from (see the module docstring)."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or resolve_tracking_uri(TrackingConfig())


def downloaded(spec: str) -> Path:
    """The model file of the MLflow model `spec`, downloaded from `store_uri()` once the store
    and the registered model are known to be there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = store_uri()
    check_store(spec, store)
    try:
        folder = Path(
            mlflow.artifacts.download_artifacts(spec, tracking_uri=store, registry_uri=store)
        )
    except MlflowException as exc:  # an unknown version or alias, a run without that path
        raise InputError(f"--model {spec}: {_first_line(exc.message)} (store: {store})") from None
    found = sorted(folder.rglob(MODEL_FILE))
    if not found:
        raise InputError(f"--model {spec}: the MLflow model holds no {MODEL_FILE}")
    return found[0]


def check_store(spec: str, store: str) -> None:
    """Refuse a store that is not there and a registered model the store does not hold,
    creating nothing."""
    if store.startswith("sqlite:///"):
        database = Path(store.removeprefix("sqlite:///").split("?")[0])
        if not database.is_file():
            raise InputError(
                f"--model {spec}: the MLflow store {store} does not exist (no file "
                f"{Path(os.path.abspath(database))}); set MLFLOW_TRACKING_URI to the store "
                "that holds the model, e.g. sqlite:///<repo>/mlflow.db"
            )
    elif store.startswith(("http://", "https://")):
        check_reachable(store)  # seconds, not MLflow's minutes of retries
    name = registered_name(spec)
    if name is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    held = [m.name for m in _all_models(client)]
    if name not in held:
        raise InputError(f"--model {spec}: the MLflow store {store} {_holding(name, held)}")


def _all_models(client: Any) -> list[Any]:
    models, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        models += list(page)
        token = page.token
        if not token:
            return models


def _holding(name: str, held: list[str]) -> str:
    """'holds no registered model 'x'; it holds: a, b' (or 'it holds none')."""
    if not held:
        return f"holds no registered model (looked for {name!r})"
    shown = ", ".join(sorted(held)[:SHOWN_MODELS])
    more = f" and {len(held) - SHOWN_MODELS} more" if len(held) > SHOWN_MODELS else ""
    return f"holds no registered model {name!r}; it holds: {shown}{more}"


def registered_name(spec: str) -> str | None:
    """The registered model a `models:/` URI names (`models:/NAME/3`, `models:/NAME@alias`);
    None for a `runs:/` URI and for a logged model's id (`models:/m-...`)."""
    if not spec.startswith("models:/"):
        return None
    rest = spec.removeprefix("models:/").strip("/")
    cut = min((i for i in (rest.find("/"), rest.find("@")) if i >= 0), default=-1)
    return rest[:cut] if cut > 0 else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "not found"
