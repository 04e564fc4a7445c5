"""The model registry: which registered version a model file is, the champion rule, and moving
the alias by hand.

A model file is known by its SHA-256 (`model_sha256`, a tag of the run that trained it and of its
registered version), so every answer (served, `olives predict`, the report) can name it the same
way. The champion rule (`Tracker.promote`, applied by the `track` stage): the first version, or
one with a higher best validation macro AUROC on the same split; test metrics never choose.
`olives promote` moves the alias to the workspace's model (or a given version) whatever the rule
says: what a user does to serve the model `olives predict` uses.

Looking up never creates a store: a missing SQLite file means "not registered".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olives.errors import InputError
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

SHA_TAG = "model_sha256"


@dataclass(frozen=True)
class ModelIdentity:
    """A model file, and the registered version it is (when there is one)."""

    sha256: str
    name: str | None = None
    version: str | None = None
    champion: str | None = None  # the version holding the champion alias, when one does

    @property
    def registered(self) -> str | None:
        """`olives-biomarkers/3`: the name a registry user types (None: not registered)."""
        return f"{self.name}/{self.version}" if self.version else None

    @property
    def is_champion(self) -> bool:
        return self.version is not None and self.version == self.champion

    def words(self, alias: str = "champion") -> str:
        """One line for a log or a header: which model this is and whether it is served."""
        short = f"sha256 {self.sha256[:12]}"
        if not self.version:
            return f"model {short} (not a registered version)"
        held = f", @{alias}" if self.is_champion else ""
        line = f"model {self.name} version {self.version}{held} ({short})"
        if not held and self.champion:
            line += f"; not the champion: @{alias} is version {self.champion}"
        return line


def store_exists(tracker: Tracker) -> bool:
    """Whether the tracking store is there to ask (a SQLite file that exists, or a server)."""
    if not (tracker.enabled and tracker.uri):
        return False
    if tracker.uri.startswith("sqlite:///"):
        return Path(tracker.uri.removeprefix("sqlite:///")).is_file()
    return True


def identify(tracker: Tracker, sha256: str, alias: str | None = None) -> ModelIdentity:
    """The registered version of the model file with `sha256` (read only; a store that
    cannot be read gives the bare identity and a warning)."""
    name = tracker.cfg.registered_model
    alias = alias or tracker.cfg.champion_alias
    if not (name and store_exists(tracker)):
        return ModelIdentity(sha256)
    try:
        return _identify(tracker.client(), name, sha256, alias)
    except Exception as exc:  # a registry that cannot answer never stops a prediction
        log.warning("could not look the model up in %s (%s)", tracker.uri, exc)
        return ModelIdentity(sha256)


def _identify(client: Any, name: str, sha256: str, alias: str | None) -> ModelIdentity:
    held = holder(client, name, alias) if alias else None
    champion = str(held.version) if held is not None else None
    found = version_of(client, name, sha256)
    if found is None:
        return ModelIdentity(sha256, champion=champion)
    return ModelIdentity(sha256, name, str(found.version), champion)


def version_of(client: Any, name: str, sha256: str) -> Any:
    """The newest version of `name` whose run trained the file `sha256` (None if none)."""
    runs = [r.info.run_id for r in _runs_with(client, sha256)]
    versions = []
    for run_id in runs:
        versions += client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def _runs_with(client: Any, sha256: str) -> list[Any]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    return client.search_runs(experiments, f"tags.{SHA_TAG} = '{sha256}'", max_results=100)


def registered_version(tracker: Tracker, name: str | None, sha256: str) -> Any:
    """The version of `name` that holds the model file `sha256`, registered from any run of that
    file: a stage re-run that reproduced the file byte for byte adds a run, never a version (one
    version per model file). None: none, or the store cannot answer (a warning)."""
    if not (tracker.enabled and name and store_exists(tracker)):
        return None
    try:
        return version_of(tracker.client(), name, sha256)
    except Exception as exc:  # the caller registers one; a tracking failure never stops a stage
        log.warning("could not look the model up in %s (%s)", tracker.uri, exc)
        return None


def describe(tracker: Tracker, version: Any, text: str, model_text: str | None = None) -> None:
    """Markdown descriptions a registry user reads: `text` on `version` and, when given,
    `model_text` on its registered model; written only where they differ (a failure warns)."""
    client = tracker.client()
    try:
        if (version.description or "") != text:
            client.update_model_version(version.name, version.version, description=text)
        if model_text is not None:
            registered = client.get_registered_model(version.name)
            if (registered.description or "") != model_text:
                client.update_registered_model(version.name, description=model_text)
    except Exception as exc:  # a description is never worth a failed stage
        log.warning("could not describe %s version %s (%s)", version.name, version.version, exc)


def holder(client: Any, name: str, alias: str) -> Any:
    """The version holding `alias` (None when none does)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException:
        return None


def promote_file(tracker: Tracker, sha256: str, version: str | None = None) -> str:
    """Move the champion alias to `version`, or to the version of the file `sha256`; what
    happened, in words. Raises InputError when there is no such version."""
    name, alias = tracker.cfg.registered_model, tracker.cfg.champion_alias
    if not (tracker.enabled and name and alias):
        raise InputError(
            "tracking.enabled, tracking.registered_model and champion_alias are needed"
        )
    if not store_exists(tracker):
        raise InputError(f"no MLflow store at {tracker.uri}: run `dvc repro` first")
    client = tracker.client()
    target = _version(client, name, version) if version else version_of(client, name, sha256)
    if target is None and version:
        raise InputError(f"{name} has no version {version!r} in {tracker.uri}")
    if target is None:
        raise InputError(
            f"the model file (sha256 {sha256[:12]}) is not a version of {name} in {tracker.uri}: "
            "run `dvc repro` (its track stage registers it) or name one with --version"
        )
    before = holder(client, name, alias)
    if before is not None and str(before.version) == str(target.version):
        return f"@{alias} already on version {target.version} of {name}: nothing to move"
    client.set_registered_model_alias(name, alias, target.version)
    was = f"version {before.version}" if before else "no version"
    return f"@{alias}: {was} -> version {target.version} of {name}"
