"""`track`: make MLflow hold what DVC holds, after every `dvc repro` (an `always_changed` stage).

DVC skips a stage whose deps did not change and restores one from its run cache without running
it, so what `train` and `evaluate` would have sent to MLflow can be missing: on a fresh clone
`train` reruns but `evaluate` is skipped (same model hash), and a restored `train` logs nothing.
This stage reads the outputs in this tree and brings the store in line, keyed by the model
file's SHA-256, so running it twice, on a restored tree or in a queued copy changes nothing more:

1. the run that trained the model file (tag `model_sha256`); when there is none (the store is
   new, or DVC restored `train`), one is recorded from the training files and tagged
   `olives.recorded_from: dvc-outputs`;
2. the model logged in that run (the pyfunc, `olives.serving.publish`) and registered as
   `tracking.registered_model`, once per model file: a version of any run of the file counts, so
   a forced `dvc repro -f` that retrains the same bytes adds a run, never a version;
3. the test metrics of `evaluate.out_dir/metrics.json` (only those computed for this model file),
   logged where they are missing or differ, with the evaluate files;
4. the headline test metrics as tags of the registered version, and the champion alias by the
   rule in `olives.tracking.registry` (never across splits);
5. the version's Markdown description (`publish.description`: what the model is, its data,
   test scores, SHA-256 and request), and the registered model's when it holds the champion.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import Params, flatten
from olives.data.loader import SplitData, split_of
from olives.data.prepare import INDEX as SPLIT_INDEX
from olives.io import EvaluateFiles, TrainFiles, file_sha256, read_json
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.serving import publish
from olives.stages.train import (
    log_missing_epochs,
    mirror,
    run_name,
    run_tags,
    summary_metrics,
)
from olives.tracking.provenance import dvc_hash
from olives.tracking.registry import SHA_TAG, describe, identify, registered_version
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

PARAMS: tuple[str, ...] = ()  # always runs; what it records comes from the outputs it reads
RECORDED_TAG = "olives.recorded_from"
HEADLINE = ("test_macro_auroc", "test_macro_f1", "test_vip_phase1")  # tags of the version
MODEL_TAGS = ("data_source", "backbone", "fusion", "loss", "git_commit")  # from the run


def run(params: Params) -> dict[str, Any]:
    tracker = Tracker(params.tracking)
    if not tracker.enabled:
        log.info("tracking.enabled is false: nothing to record in MLflow")
        return {}
    tracker.check()
    model_path = Path(params.train.model_dir) / MODEL_FILE
    sha = file_sha256(model_path)
    run_id = tracker.find_run(SHA_TAG, sha) or record_training(tracker, params, model_path)
    test = changed(tracker.run_metrics(run_id), tested(params, sha))
    name = params.tracking.registered_model if params.tracking.log_model else None
    version = registered_version(tracker, name, sha)  # of any run: one version per file
    missing_model = (
        params.tracking.log_model and version is None and not tracker.run_tag(run_id, "model_id")
    )
    if missing_model or test:  # reopen the run only for what it lacks
        with tracker.run(run_id=run_id):
            if missing_model:
                log_model(tracker, params, model_path)
            if test:
                log_test(tracker, test, EvaluateFiles(Path(params.evaluate.out_dir)))
    version = version or register(tracker, params, run_id)
    if version is not None:
        finish(tracker, params, version, run_id, model_path)
    identity = identify(tracker, sha)
    log.info("MLflow run %s; %s", run_id, identity.words(params.tracking.champion_alias or ""))
    return {"run_id": run_id, "version": identity.version, "champion": identity.champion}


def finish(tracker: Tracker, params: Params, version: Any, run_id: str, model_path: Path) -> None:
    """The version's tags (the file's SHA-256, its training run's `MODEL_TAGS`, this tree's
    headline test metrics), the champion rule, then the descriptions a registry user reads."""
    sha = file_sha256(model_path)
    metrics = tracker.run_metrics(run_id)
    headline = {k: v for k, v in metrics.items() if k in HEADLINE}
    trained = {k: tracker.run_tag(version.run_id, k) for k in MODEL_TAGS}
    tracker.tag_version(version.name, version.version, {SHA_TAG: sha, **trained, **headline})
    alias = params.tracking.champion_alias
    if alias and same_split(params, tracker.run_tag(run_id, "split_md5")):
        outcome = tracker.promote(version.name, alias, version, run_id)
        log.info("%s: %s", version.name, outcome)
    uri = f"models:/{version.name}/{version.version}"
    text = publish.description(ModelBundle.load(model_path, "cpu"), sha, metrics, uri)
    served = alias and identify(tracker, sha, alias).is_champion  # the model's text is its own
    lead = f"`@{alias}` is version {version.version}; each version's description says what it is."
    describe(tracker, version, text, f"{lead}\n\n{text}" if served else None)


def record_training(tracker: Tracker, params: Params, model_path: Path) -> str:
    """A run for a model file no run trained in this store (DVC restored `train`, or the store
    is new): params of this tree (DVC says they produced it), epochs and files."""
    files = TrainFiles(Path(params.train.report_dir))
    history = pd.read_csv(files.history).to_dict("records")
    tags = {**run_tags(params), RECORDED_TAG: "dvc-outputs"}
    with tracker.run(run_name=run_name(params), tags=tags):
        tracker.log_params(flatten(params))
        log_missing_epochs(tracker, history)
        mirror(tracker, params, model_path)
        log.info("recorded MLflow run %s from %s", tracker.run_id, files.root)
        return str(tracker.run_id)


def log_model(tracker: Tracker, params: Params, model_path: Path) -> None:
    """The pyfunc model in the active run, registered (`publish.log_model`); the run tagged
    with its id, and the training summary linked to it."""
    name = params.tracking.registered_model
    info = publish.log_model(tracker, model_path, name, example_scan(params))
    if info is None:
        return
    tracker.set_tags({"model_id": info.model_id})
    best = read_json(TrainFiles(Path(params.train.report_dir)).metrics)
    tracker.log_metrics(summary_metrics(best), model_id=info.model_id)


def example_scan(params: Params) -> bytes:
    """The test split's first scan as PNG bytes (the MLflow input example)."""
    return png(split_of(params, "test"))


def png(data: SplitData) -> bytes:
    """The split's first scan as PNG bytes."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.asarray(data.images[data.rows[0]])).save(buffer, format="PNG")
    return buffer.getvalue()


def register(tracker: Tracker, params: Params, run_id: str) -> Any:
    """The version registered from the model the run logged but did not register (the
    registry failed, or `registered_model` was off then). None: no model logged."""
    name = params.tracking.registered_model
    if not (name and params.tracking.log_model):
        return None
    versions = tracker.versions_of_run(name, run_id)
    if versions:
        return max(versions, key=lambda v: int(v.version))
    model_id = tracker.run_tag(run_id, "model_id")
    return tracker.register(f"models:/{model_id}", name) if model_id else None


def tested(params: Params, sha: str) -> dict[str, float]:
    """`test_*` point estimates of evaluate's metrics.json when they are this model file's
    (empty, with a warning, when they belong to another file)."""
    path = EvaluateFiles(Path(params.evaluate.out_dir)).metrics
    if not path.is_file():
        log.warning("%s is missing: no test metrics to record", path)
        return {}
    metrics = read_json(path)
    if metrics.get("context", {}).get("model_sha256") != sha:
        log.warning("%s was computed for another model file: run `dvc repro evaluate`", path)
        return {}
    return {f"test_{k}": v for k, v in flat_metrics(metrics).items()}


def changed(logged: dict[str, float], metrics: dict[str, float]) -> dict[str, float]:
    """The metrics the run lacks or holds with another value (MLflow's names: `@` -> `_at_`)."""
    named = {k.replace("@", "_at_"): v for k, v in metrics.items()}
    return {
        k: v for k, v in named.items() if not math.isclose(logged.get(k, math.nan), v, rel_tol=1e-9)
    }


def log_test(tracker: Tracker, metrics: dict[str, float], files: EvaluateFiles) -> None:
    """Test metrics on the active run and its logged model, with the evaluate files."""
    tracker.log_metrics(metrics)
    model_id = tracker.tag("model_id")
    if model_id:
        tracker.log_metrics(metrics, model_id=model_id)
    for path in (files.metrics, files.predictions, files.vip_submission):
        tracker.log_artifact(path, "evaluate")
    for kind in ("roc", "pr", "reliability"):
        tracker.log_artifact(files.figure(kind), "evaluate")


def same_split(params: Params, trained_on: str | None) -> bool:
    """Whether this tree's split (its own dvc.lock / index file, the one tested on) is the
    split the model's run was trained on: a model of another split never moves the champion."""
    tested_on = dvc_hash(f"{params.split.out_dir}/{SPLIT_INDEX}")
    if trained_on is not None and trained_on == tested_on:
        return True
    log.warning(
        "the model was trained on split %s but this tree holds split %s: the champion stays",
        trained_on,
        tested_on,
    )
    return False


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Point estimates only: `macro_auroc`, `B1_f1`, `vip_phase1`, ..., and per volume
    `volume_macro_auroc`, `volume_B1_f1`, ... when evaluate could group the scans."""
    flat = _flat_block(metrics)
    for score in ("vip_phase1", "vip_phase2"):
        if isinstance(metrics.get(score), float):
            flat[score] = metrics[score]
    volumes = metrics.get("per_volume") or {}
    if "macro" in volumes:
        flat |= {f"volume_{k}": v for k, v in _flat_block(volumes).items()}
    return flat


def _flat_block(metrics: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for avg in ("macro", "micro"):
        for key, value in metrics[avg].items():
            if isinstance(value, float):
                flat[f"{avg}_{key}"] = value
    for name, entry in metrics["per_label"].items():
        for key, value in entry.items():
            if isinstance(value, float) and key != "threshold":
                flat[f"{name}_{key}"] = value
    return flat
