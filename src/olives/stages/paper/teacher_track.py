"""`teacher_track` (paper/teacher/dvc.yaml, always run): the teacher axis's ensembles and
students as registered MLflow models, servable like the champion.

Like the main pipeline's `track`, it reads the outputs in this tree and brings the store in
line, keyed by each model file's SHA-256, because DVC may have skipped or restored the stages
that would have talked to MLflow. For every (split, seed) and kind (`ensemble`, `student`):

1. the MLflow run of the model file, with its test metrics (`ensemble.record`, or `track.run`
   on the student's cell, which records the training from DVC's outputs when DVC restored it);
2. unless a version of any run of that file exists (a stage re-run that reproduced the file
   byte for byte adds a run, not a version), the pyfunc model (`olives.serving.publish`, the
   same input and output as the champion's) logged in that run, registered as
   `<tracking.registered_model>-<kind>` (`olives-biomarkers-ensemble`, `-student`);
3. that version tagged with the file's SHA-256, the split, the seed and its headline test
   metrics, the alias `p<split>-s<seed>` on it (`mlflow models serve -m
   models:/olives-biomarkers-ensemble@p0-s0`), and
   its Markdown description (`publish.description`).

Never the `champion` alias of `tracking.registered_model`: a paper model is served by name.
Running it twice, on a restored tree or in a queued copy, adds nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from olives.config import Params
from olives.io import PaperFiles, file_sha256
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.serving import publish
from olives.stages import track
from olives.stages.paper import ensemble, fold, student
from olives.tracking.registry import SHA_TAG, describe
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

PARAMS: tuple[str, ...] = ()  # always runs; what it records comes from the outputs it reads
KINDS = ("ensemble", "student")
SPLIT_TAG, SEED_TAG, KIND_TAG = "olives.split", "olives.seed", "olives.kind"


def registered_name(params: Params, kind: str) -> str:
    """`olives-biomarkers-ensemble`: the registered model of one kind of the axis."""
    return f"{params.tracking.registered_model}-{kind}"


def alias(split: int, seed: int) -> str:
    return PaperFiles.pair(split, seed)


def cell_of(params: Params, split: int, seed: int, kind: str) -> Params:
    """The cell the stage of `kind` wrote (its model file, evaluation and MLflow experiment)."""
    if kind == "ensemble":
        return ensemble.cell_params(params, split, seed, "ensemble")
    return student.cell_params(params, split, seed, kind)


def run_of(cell: Params, split: int, seed: int, kind: str, sha: str) -> str:
    """The MLflow run of the model file `sha`, with its test metrics (recorded when missing)."""
    group = fold.group(split, seed)
    if kind == "ensemble":
        ensemble.record(cell, f"{group}-ensemble", {fold.GROUP_TAG: group})
    else:
        track.run(cell)
    run_id = Tracker(cell.tracking).find_run(SHA_TAG, sha)
    if run_id is None:
        raise RuntimeError(f"no MLflow run holds the {kind} of {group} (sha256 {sha[:12]})")
    return run_id


def register(params: Params, split: int, seed: int, kind: str) -> dict[str, Any]:
    """Steps 1-3 for one model file; its registered name, version and SHA-256."""
    cell = cell_of(params, split, seed, kind)
    sha = file_sha256(Path(cell.train.model_dir) / MODEL_FILE)
    run_id = run_of(cell, split, seed, kind, sha)
    name = registered_name(params, kind)
    tracker = Tracker(cell.tracking)
    model_path = Path(cell.train.model_dir) / MODEL_FILE
    found = publish.register_file(tracker, run_id, model_path, name, sha, track.example_scan(cell))
    if found is None:
        raise RuntimeError(f"{name}: registering the model of run {run_id} failed")
    version = str(found.version)
    metrics = tracker.run_metrics(run_id)
    headline = {k: v for k, v in metrics.items() if k in track.HEADLINE}
    tags = {SHA_TAG: sha, SPLIT_TAG: split, SEED_TAG: seed, KIND_TAG: kind, **headline}
    tracker.tag_version(name, version, tags)
    label = alias(split, seed)
    tracker.client().set_registered_model_alias(name, label, version)
    uri = f"models:/{name}@{label}"
    text = publish.description(ModelBundle.load(model_path, "cpu"), sha, metrics, uri)
    lead = (
        f"The teacher axis's {kind} models, one version per patient split and training seed "
        "(alias `p<split>-s<seed>`)."
    )
    head = f"Patient split {split}, training seed {seed}, alias `@{label}`."
    describe(tracker, found, f"{head}\n\n{text}", lead)
    log.info("%s: version %s holds @%s (sha256 %s)", name, version, label, sha[:12])
    return {"name": name, "version": version, "sha256": sha}


def run(params: Params) -> list[dict[str, Any]]:
    if not (params.tracking.enabled and params.tracking.registered_model):
        log.info("tracking.enabled or tracking.registered_model is off: nothing to register")
        return []
    Tracker(params.tracking).check()
    paper = params.paper
    return [
        register(params, split, seed, kind)
        for split in paper.splits
        for seed in paper.seeds
        for kind in KINDS
    ]
