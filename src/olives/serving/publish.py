"""A model file as a registered MLflow model: the pyfunc (`olives.serving.pyfunc`) logged in a
run and registered, and the Markdown a registry user reads on its version.

One version per model file: `publish` first looks for a version of any run of the file
(`olives.tracking.registry.registered_version`), because a stage re-run that reproduced the file
byte for byte (`dvc repro -f`) adds a run, never a version. Used by `track` and `teacher_track`.

Why the logged model has no input schema ("Inputs (0)" in the UI): see `pyfunc.signature`;
MLflow's schema enforcement would drop a misspelt column before the pyfunc can name it. The
input example and the description say what to send instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olives.models import ModelBundle
from olives.serving import pyfunc
from olives.tracking.registry import registered_version
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

SOURCE_KEY = "data.source"  # where a model file records its training data (`serving.predict`)


def log_model(tracker: Tracker, model_path: Path, name: str | None, example: bytes) -> Any:
    """The pyfunc of the model file logged in the active run, registered as `name` (which the
    served model names in its answers, `pyfunc.REGISTERED`; None: not registered), with the
    scan `example` (encoded image bytes) as its input example. Its ModelInfo, or None."""
    bundle = ModelBundle.load(model_path, "cpu")
    return tracker.log_pyfunc(
        name="model",
        python_model=str(Path(pyfunc.__file__).with_name("mlflow_model.py")),
        artifacts={pyfunc.ARTIFACT: str(model_path)},
        signature=pyfunc.signature(bundle),
        input_example=pyfunc.example(example, bundle),
        pip_requirements=pyfunc.requirements(),  # MLflow's inference: a subprocess, 8 s
        registered_model_name=name,
        model_config={pyfunc.REGISTERED: name},
        step=max(bundle.best_epoch, 0),
    )


def register_file(
    tracker: Tracker, run_id: str, model_path: Path, name: str, sha256: str, example: bytes
) -> Any:
    """The version of `name` holding the model file: the one of any run of the file, else the
    pyfunc logged in run `run_id` and registered. None when MLflow failed."""
    found = registered_version(tracker, name, sha256)
    if found is not None:
        return found
    with tracker.run(run_id=run_id):
        info = log_model(tracker, model_path, name, example)
    return registered_version(tracker, name, sha256) if info is not None else None


def description(
    bundle: ModelBundle, sha256: str, metrics: Mapping[str, float], uri: str | None = None
) -> str:
    """Markdown: what the model is, the data it was trained on, its test scores, the file's
    SHA-256 and what to send it (to the model `uri`, `models:/<name>/<version>`, served)."""
    labels = ", ".join(bundle.labels)
    lines = [
        f"**OCT biomarker model**: {architecture(bundle)}. One B-scan in; for each of "
        f"{len(bundle.labels)} biomarkers ({labels}) a calibrated probability and a 0/1 "
        "decision at its tuned threshold.",
        "",
        trained_on(bundle),
        "",
        scores(metrics),
        "",
        f"Model file SHA-256: `{sha256}`",
        "",
        request_help(bundle.clinical, uri),
    ]
    return "\n".join(lines)


def architecture(bundle: ModelBundle) -> str:
    """`tf_efficientnet_lite0 backbone, concat fusion with BCVA, CST`, or an ensemble of them."""
    described = bundle.model.describe()
    members = described.get("members")
    cfg = members[0]["description"]["model"] if members else described["model"]
    clinical = ", ".join(bundle.clinical)
    fusion = "image only" if cfg["fusion"] == "image" or not clinical else f"with {clinical}"
    one = f"`{cfg['backbone']}` backbone, `{cfg['fusion']}` fusion ({fusion})"
    return f"ensemble of {len(members)} members, each {one}" if members else one


def trained_on(bundle: ModelBundle) -> str:
    source = bundle.params.get(SOURCE_KEY) or None
    if source == "synthetic":
        return (
            f"**Trained on SYNTHETIC data** (`{SOURCE_KEY}: synthetic`): its outputs on real "
            "scans are not meaningful."
        )
    if source is None:
        return f"The model file does not record the data it was trained on (`{SOURCE_KEY}`)."
    return f"Trained on real OCT data (`{SOURCE_KEY}: {source}`)."


def scores(metrics: Mapping[str, float]) -> str:
    """The test split's macro AUROC and F1, as the `evaluate` stage computed them."""
    shown = [
        f"macro {what} {metrics[key]:.3f}"
        for what, key in (("AUROC", "test_macro_auroc"), ("F1", "test_macro_f1"))
        if key in metrics
    ]
    if not shown:
        return "Test metrics: not recorded for this model file."
    return f"Test split: {', '.join(shown)}."


def request_help(clinical: tuple[str, ...], uri: str | None = None) -> str:
    """The request a client sends (`olives.serving.pyfunc`), the command that writes one and
    the one that serves the model `uri`."""
    optional = ", ".join(f"`{c}`" for c in clinical)
    extra = f"; optional {optional} (raw values; a missing one is imputed)" if clinical else ""
    flags = " ".join(f"--{c.lower()} <value>" for c in clinical if c in ("BCVA", "CST"))
    command = " ".join(["olives request scan.png", *([flags] if flags else []), "> request.json"])
    serve = f"mlflow models serve -m {uri or 'models:/<name>/<version>'} --env-manager local"
    return (
        "**What to send** (one row per B-scan): `image`, the PNG, TIFF or JPEG file as base64 "
        f"text{extra}. `{command}` writes such a request; POST it to `/invocations` of "
        f"`{serve}` (Content-Type: application/json)."
    )
