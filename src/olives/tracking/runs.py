"""MLflow: where runs go, checking the server is there, and logging that never loses work.

Default store: `sqlite:///<project root>/mlflow.db` (MLflow 3 deprecated the `./mlruns` file
store). The root is `DVC_ROOT` when set, because `dvc exp run --temp/--queue` runs stages in a
throw-away copy under `.dvc/tmp/exps/` and a database there would vanish with it. The
`MLFLOW_TRACKING_URI` environment variable, then `tracking.tracking_uri`, override the default.

Every stage writes its results to local files first (DVC outputs); MLflow gets copies. If the
tracking server fails mid-run, the `Tracker` warns once and carries on, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from olives.config import TrackingConfig
from olives.errors import InputError

log = logging.getLogger(__name__)


class TrackingUnavailableError(InputError, RuntimeError):
    """The tracking server cannot be reached; raised before any training starts."""


def project_root() -> Path:
    """`DVC_ROOT` (set by DVC, also in temp experiment copies), else the git top level."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return Path(top)
    except (OSError, subprocess.SubprocessError):
        return Path.cwd().resolve()


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a server is not there."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
                if reply.status != 200:
                    raise TrackingUnavailableError(f"{uri}/health answered {reply.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} is unreachable ({exc}). Start it, point "
                "MLFLOW_TRACKING_URI elsewhere, or set tracking.enabled: false"
            ) from exc
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=project_root(),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def dvc_hash(path: str) -> str | None:
    """The md5 DVC recorded for an output in dvc.lock (the cache the run trained on)."""
    lock = project_root() / "dvc.lock"
    if not lock.is_file():
        return None
    import yaml

    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


class Tracker:
    """A thin, failure-tolerant wrapper around one MLflow run (main process only)."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.uri = resolve_tracking_uri(cfg) if cfg.enabled else None
        self.run_id: str | None = None
        self._failed = False

    def check(self) -> None:
        if self.enabled and self.uri:
            check_reachable(self.uri)

    @contextmanager
    def run(
        self,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[Tracker]:
        """Start (or resume, with `run_id`) a run; end it even on errors."""
        if not self.enabled:
            yield self
            return
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        if run_id is None:
            mlflow.set_experiment(self.cfg.experiment)
        with mlflow.start_run(run_id=run_id, run_name=run_name) as active:
            self.run_id = active.info.run_id
            if tags:
                self.set_tags(tags)
            yield self

    def tag(self, key: str) -> str | None:
        """A tag of the active run (None when tracking is off or the tag is absent)."""
        if not (self.enabled and self.run_id):
            return None
        run = self._client_call("get_run", self.run_id)
        return run.data.tags.get(key) if run is not None else None

    def find_run(self, tag: str, value: str) -> str | None:
        """The newest run of the experiment whose `tag` equals `value` (None if none)."""
        if not self.enabled:
            return None
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        found = mlflow.get_experiment_by_name(self.cfg.experiment)
        if found is None:
            return None
        runs = mlflow.search_runs(
            [found.experiment_id],
            filter_string=f"tags.{tag} = '{value}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        return runs[0].info.run_id if runs else None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", {k: str(v) for k, v in tags.items() if v is not None})

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow caps a param value at 6000 characters and rejects None.
        clean = {k: str(v)[:6000] for k, v in params.items()}
        self._call("log_params", clean)

    def log_metrics(
        self,
        metrics: Mapping[str, float | None],
        step: int | None = None,
        model_id: str | None = None,
    ) -> None:
        """Run metrics; with `model_id`, also linked to that logged model."""
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if v is not None}
        self._call("log_metrics", clean, step=step, model_id=model_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("log_artifact", str(path), artifact_path=artifact_path)

    def log_pyfunc(self, **kwargs: Any) -> Any:
        """`mlflow.pyfunc.log_model` in the active run; its ModelInfo, or None."""
        if not (self.enabled and not self._failed and self.run_id):
            return None
        import mlflow.pyfunc

        return self._guard(lambda: mlflow.pyfunc.log_model(**kwargs))

    def tag_version(self, name: str, version: str, tags: Mapping[str, Any]) -> None:
        """Tags on a registered model version (what a registry user filters by)."""
        for key, value in tags.items():
            if value is not None:
                self._client_call("set_model_version_tag", name, version, key, str(value))

    def versions_of_run(self, name: str, run_id: str) -> list[Any]:
        found = self._client_call("search_model_versions", f"name='{name}' and run_id='{run_id}'")
        return list(found or [])

    def promote(self, name: str, alias: str, version: Any, run_id: str) -> str:
        """Move `alias` to `version` when it beats the holder on validation (see README):
        no holder yet, or a holder trained on the same split (tag `split_md5`) with a lower
        best validation macro AUROC. Returns what happened, in words."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            holder = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            holder = None
        if holder is not None and holder.version == version.version:
            return f"version {version.version} already holds @{alias}"
        ours = client.get_run(run_id).data
        if holder is not None:
            theirs = client.get_run(holder.run_id).data
            if theirs.tags.get("split_md5") != ours.tags.get("split_md5"):
                return f"@{alias} stays on version {holder.version}: trained on another split"
            key = "best_val_macro_auroc"
            if ours.metrics.get(key, -1.0) <= theirs.metrics.get(key, -1.0):
                return f"@{alias} stays on version {holder.version}: its validation AUROC is higher"
        self._client_call("set_registered_model_alias", name, alias, version.version)
        return f"@{alias} now on version {version.version}"

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def _client_call(self, method: str, *args: Any) -> Any:
        if not (self.enabled and not self._failed):
            return None
        return self._guard(lambda: getattr(self.client(), method)(*args))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.enabled and not self._failed and self.run_id:
            import mlflow

            self._guard(lambda: getattr(mlflow, method)(*args, **kwargs))

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # a tracking failure must never cost the run's results
            self._failed = True
            log.warning(
                "MLflow logging failed (%s); results are still in the local outputs, "
                "further MLflow calls in this run are skipped",
                exc,
            )
