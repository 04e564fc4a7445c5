"""MLflow: where runs go, checking the server is there, and logging that never loses work.

The store (`project_root`): `sqlite:///<root>/mlflow.db`, the root being `DVC_ROOT` when set,
because `dvc exp run --temp/--queue` runs stages in a throw-away copy under `.dvc/tmp/exps/`
and a database there would vanish with it: every experiment of a queue writes to that one store
(created under a lock: two experiments starting at once would both migrate a new one).
`MLFLOW_TRACKING_URI`, then `tracking.tracking_uri`, override it. What a run came from (commit,
data hashes) is read from the stage's own tree instead (`olives.tracking.provenance`).

Every stage writes its results to local files first (DVC outputs); MLflow gets copies. If the
tracking server fails mid-run, the `Tracker` warns once and carries on, so nothing is lost.

A run whose process dies without ending it (SIGKILL, out of memory) stays RUNNING. Runs are
tagged with their process (`process_tag`); starting a run ends as KILLED the RUNNING runs of the
experiment whose process on this machine is gone (FAILED stays MLflow's word for an exception).
Live processes, other machines and untagged runs are left alone, so experiments running side by
side never close each other's runs. `train` continues the run its checkpoint names instead.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from olives.config import TrackingConfig
from olives.errors import InputError
from olives.tracking.experiment import tag_experiment
from olives.tracking.provenance import process_alive, process_tag, run_git

log = logging.getLogger(__name__)


PROCESS_TAG = "olives.process"  # the process writing a run (`process_tag`)


class TrackingUnavailableError(InputError, RuntimeError):
    """The tracking server cannot be reached; raised before any training starts."""


def project_root() -> Path:
    """Where the MLflow store lives: `DVC_ROOT` (set by DVC; in a queued or `--temp` experiment
    it names the original repository, not the throw-away copy), else the git top level.
    Shared by every experiment on purpose; never use it for provenance (see `work_tree`)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    top = run_git(["rev-parse", "--show-toplevel"], Path.cwd())
    return Path(top) if top else Path.cwd().resolve()


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
        create_store(uri)


def create_store(uri: str, experiment: str | None = None) -> None:
    """Create (or open) the SQLite store `uri`, and `experiment` in it, holding an exclusive
    lock on its folder: MLflow builds a new store by a schema migration, and two processes
    doing it (or creating one experiment) at once, as experiments of `dvc queue start -j 2` do,
    fail ('Online migration expected to match one row', 'already exists')."""
    folder = Path(uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        _open_store(uri, experiment)
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _open_store(uri, experiment)
    finally:
        os.close(handle)  # releases the lock


def _open_store(uri: str, experiment: str | None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.search_experiments(max_results=1)
    if experiment and client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment)


def use_store(uri: str) -> None:
    """Point MLflow's fluent API at `uri` without leaving it in `MLFLOW_TRACKING_URI`: MLflow 3's
    `set_tracking_uri` also sets that variable, which `resolve_tracking_uri` reads as the user's
    choice, so every later `Tracker` of the process would ignore its own `tracking_uri`."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def unique_name(client: Any, experiment_id: str, name: str) -> str:
    """`name`, or `name #<n>` (n one more than the highest taken) when a run of the experiment
    has it: two runs of the same settings are told apart in the runs table."""
    pattern = re.compile(re.escape(name) + r"(?: #(\d+))?")
    like = re.sub(r"['%\\]", "_", name)  # `_` matches any one character: filtered below
    try:
        runs = client.search_runs(
            [experiment_id], f"attributes.run_name LIKE '{like}%'", max_results=10000
        )
    except Exception as exc:  # a name is never worth a failed run
        log.warning("could not look up the run names of the experiment (%s)", exc)
        return name
    taken = [pattern.fullmatch(r.info.run_name or "") for r in runs]
    numbers = [int(m.group(1) or 1) for m in taken if m]
    return f"{name} #{max(numbers) + 1}" if numbers else name


def stays_words(alias: str, holder: str, ours: float | None, theirs: float | None) -> str | None:
    """Why `alias` stays on version `holder`, whose best validation macro AUROC is `theirs`, when
    the new version's (`ours`) is not above it (a missing one counts as -1); None: it moves."""
    if (-1.0 if ours is None else ours) > (-1.0 if theirs is None else theirs):
        return None
    why = f"@{alias} stays on version {holder}: its validation AUROC"
    if ours is None or theirs is None:
        return f"{why} is {theirs} and this version's {ours} (not recorded counts as -1)"
    if ours == theirs:
        return f"{why} is equal ({theirs:.4f})"
    return f"{why} is higher ({theirs:.4f} > {ours:.4f})"


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
        """Start (or continue, with `run_id`) a run tagged with this process; end it even on
        errors. Runs of the experiment abandoned by a dead process are closed first. A new run
        named like another of the experiment gets ` #2`, ` #3`, ... (`unique_name`)."""
        if not self.enabled:
            yield self
            return
        import mlflow

        if self.uri.startswith("sqlite:///"):
            create_store(self.uri, self.cfg.experiment)
        use_store(self.uri)
        if run_id is None:
            experiment = mlflow.set_experiment(self.cfg.experiment)
            tag_experiment(self.client(), experiment)  # the UI opens on the runs table
            if run_name:
                run_name = unique_name(self.client(), experiment.experiment_id, run_name)
        self.close_abandoned(keep=run_id)
        with mlflow.start_run(run_id=run_id, run_name=run_name) as active:
            self.run_id = active.info.run_id
            self.set_tags({PROCESS_TAG: process_tag(), **(tags or {})})
            yield self

    def resumable(self, run_id: str | None) -> str | None:
        """`run_id` if that run can be continued (it is in this store and experiment, not
        deleted), else None with a warning: a new run starts instead."""
        if not (self.enabled and run_id):
            return None
        client = self.client()
        try:  # not found, deleted, another experiment: start afresh, never fail
            run = client.get_run(run_id)
            found = client.get_experiment_by_name(self.cfg.experiment)
            ours = found is not None and run.info.experiment_id == found.experiment_id
            reason = "" if ours and run.info.lifecycle_stage == "active" else "deleted or moved"
        except Exception as exc:
            reason = str(exc)
        if reason:
            log.warning("cannot continue MLflow run %s (%s): starting a new run", run_id, reason)
            return None
        return run_id

    def close_abandoned(self, keep: str | None = None) -> list[str]:
        """End as KILLED the RUNNING runs of the experiment whose process is gone
        (`process_alive`), except `keep`; the ids ended. A failure here only warns."""
        if not self.enabled:
            return []
        closed: list[str] = []
        try:
            client = self.client()
            experiment = client.get_experiment_by_name(self.cfg.experiment)
            running = []
            if experiment is not None:
                running = client.search_runs(
                    [experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
                )
            for run in running:
                owner = run.data.tags.get(PROCESS_TAG)
                if run.info.run_id == keep or owner is None or process_alive(owner):
                    continue
                client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
                log.warning(
                    "MLflow run %s (%s) was left RUNNING by a process that is gone: ended KILLED",
                    run.info.run_id,
                    run.info.run_name,
                )
        except Exception as exc:  # cleaning up must never stop a run
            log.warning("could not close abandoned MLflow runs (%s)", exc)
        return closed

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which the active run has metric `key` (empty with tracking off)."""
        if not self.run_id:
            return set()
        history = self._client_call("get_metric_history", self.run_id, key)
        return {int(m.step) for m in history or ()}

    def tag(self, key: str) -> str | None:
        """A tag of the active run (None when tracking is off or the tag is absent)."""
        return self.run_tag(self.run_id, key) if self.enabled and self.run_id else None

    def find_run(self, tag: str, value: str) -> str | None:
        """The newest run of the experiment whose `tag` equals `value` (None if none)."""
        if not self.enabled:
            return None
        import mlflow

        use_store(self.uri)
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

    def run_tag(self, run_id: str, key: str) -> str | None:
        """A tag of run `run_id`, active or not (None: absent, or tracking off)."""
        run = self._client_call("get_run", run_id)
        return run.data.tags.get(key) if run is not None else None

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of run `run_id` (empty with tracking off)."""
        run = self._client_call("get_run", run_id)
        return dict(run.data.metrics) if run is not None else {}

    def register(self, source: str, name: str) -> Any:
        """Register the logged model `source` (`models:/<model id>`) as a version of `name`."""
        import mlflow

        use_store(self.uri)
        return self._guard(lambda: mlflow.register_model(source, name))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", {k: str(v) for k, v in tags.items() if v is not None})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The params the run lacks: a continued run keeps its first values (MLflow refuses a
        changed value, and a runtime knob may differ between attempts)."""
        clean = {k: str(v)[:6000] for k, v in params.items()}  # MLflow's cap
        run = self._client_call("get_run", self.run_id) if self.run_id else None
        logged = run.data.params if run is not None else {}
        self._call("log_params", {k: v for k, v in clean.items() if k not in logged})

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
        """Move `alias` to `version` when it beats the holder on validation (docs/experiments.md):
        no holder yet, or a holder trained on the same split (tag `split_md5`, both recorded)
        with a lower best validation macro AUROC. Returns what happened, in words."""
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
            split = ours.tags.get("split_md5")
            if split is None or theirs.tags.get("split_md5") != split:
                return (
                    f"@{alias} stays on version {holder.version}: trained on another split "
                    "(or one not recorded)"
                )
            key = "best_val_macro_auroc"
            stays = stays_words(
                alias, holder.version, ours.metrics.get(key), theirs.metrics.get(key)
            )
            if stays:
                return stays
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
