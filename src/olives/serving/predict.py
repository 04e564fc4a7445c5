"""`olives predict INPUT... [--model] [--out] [--by] [--gradcam DIR]`: the command.

Reads scans (`olives.serving.scans`) in chunks, predicts them
(`olives.serving.predictor.Predictor`) on the GPU when there is one, writes one CSV row per scan
(and per volume, eye or visit with `--by`), and Grad-CAM overlays per scan and biomarker with
`--gradcam`. An unreadable scan gets its `error` and the run goes on; the command fails only
when nothing could be read. Every input the user names gets at least one row, and a row that is
predicted but doubtful says why in `warning` (`olives.serving.scans`, `olives.serving.predictor`).

The predictions say what they are: each row carries `model_sha256` (the model file's SHA-256),
and `OUT.json` beside the CSV holds the model card (`model_card`: file or URI, digest, the data
it was trained on, input size, labels, thresholds, clinical inputs) with the counts of scans
predicted, failed and warned, and a `warning` when the model's outputs on real scans mean
nothing (trained on synthetic OCT) or cannot be vouched for (its training data not recorded).
Decisions are integers (`1`/`0`, empty where a row failed), never `1.0`.

`--tta hflip shift` averages each scan's logits over the identity and those test-time views
(`olives.models.inference`) before the model's temperatures and thresholds, as `evaluate.tta`
does; `OUT.json`'s `tta` lists them. Grad-CAM overlays still explain the unaugmented scan. The
served MLflow model (`olives.serving.pyfunc`) predicts without TTA.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from olives.config import EvaluateConfig, TrackingConfig
from olives.data.schema import clinical_problem
from olives.errors import InputError
from olives.io import file_sha256, write_json
from olives.models import ModelBundle
from olives.runtime import Runtime
from olives.serving.locate import URI_SCHEMES, model_file
from olives.serving.predictor import ID_FIELDS, Decoded, Predictor, aggregate
from olives.serving.scans import Scan, read_scans
from olives.tracking.registry import identify
from olives.tracking.runs import Tracker

log = logging.getLogger(__name__)

INFERENCE_BATCH = EvaluateConfig().batch_size  # one inference batch size: evaluate.batch_size
CHUNK = 512  # scans decoded and predicted together (bounds memory)
SOURCE_KEY = "data.source"  # where a model file records the data it was trained on
CLINICAL_FLAGS = {"BCVA": "--bcva", "CST": "--cst"}  # per-call values: clinical column -> flag


def write_overlays(
    predictor: Predictor, scans: list[Scan], decoded: Decoded, table: pd.DataFrame, folder: Path
) -> None:
    """`<folder>/<file>-<hash>_<index>_<label>.png` per predicted row of `table` (the rows of
    `scans`): the scan at its own aspect ratio with the Grad-CAM of that biomarker's logit (red
    = strongest support for a positive), under a strip naming the biomarker, its probability,
    the tuned threshold and the decision."""
    import torch
    from PIL import Image

    from olives.models.gradcam import grad_cam

    bundle = predictor.bundle
    if bundle.model.backbone is None:
        raise InputError("--gradcam: this model uses clinical values only: no image to explain")
    folder.mkdir(parents=True, exist_ok=True)
    features, _ = predictor.clinical(scans)
    keep = np.flatnonzero(table["error"].isna().to_numpy())
    for start in range(0, len(keep), predictor.batch_size):
        rows = keep[start : start + predictor.batch_size]
        images = torch.from_numpy(decoded.images[rows]).unsqueeze(1).float() / 255
        x = predictor.runtime.to_device(images)
        clinical = predictor.runtime.to_device(torch.from_numpy(features[rows]))
        for j, label in enumerate(bundle.labels):
            cams = grad_cam(bundle.model, x, clinical, j)
            for k, i in enumerate(rows):
                picture = _annotated(decoded, i, cams[k], table.iloc[i], label, bundle)
                name = f"{_stem(scans[i].source)}_{scans[i].index:03d}_{label}.png"
                Image.fromarray(picture).save(folder / name, compress_level=3)  # fast, lossless


def _annotated(
    decoded: Decoded, i: int, cam: np.ndarray, row: pd.Series, label: str, bundle: ModelBundle
) -> np.ndarray:
    """Row `i`'s overlay for `label` at the scan's own aspect ratio, with its numbers on top."""
    from olives.models.gradcam import annotated_overlay, empty_reason, scan_view

    shape = decoded.shapes[i] if decoded.shapes else None  # None: a `Decoded` without shapes
    image, cam = scan_view(decoded.images[i], cam, shape or cam.shape, bundle.resize)
    threshold = bundle.thresholds[bundle.labels.index(label)]
    present = int(row[f"{label}_pred"]) == 1
    lines = [
        f"{label}: {'present' if present else 'absent'}",
        f"probability {row[f'{label}_prob']:.3f}, threshold {threshold:.3f}",
    ]
    if bundle.resize == "crop":
        lines.append("the centre crop the model saw")
    reason = empty_reason(cam)
    return annotated_overlay(image, cam, [*lines, reason] if reason else lines)


def _stem(source: str) -> str:
    """A file name for a source path: its stem plus a short hash of the whole path."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).stem)
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:6]}"


def resolve_model(spec: str) -> tuple[Path, str]:
    """The local model file and its identity for `--model`: a path (file or folder), or an
    MLflow URI (`models:/<name>/<version or @alias>`, `runs:/<id>/model`)."""
    path = model_file(spec)
    return path, identity(spec, file_sha256(path))


def identity(spec: str, sha256: str) -> str:
    """The `model` column: the MLflow URI, if any, and the start of the file's digest."""
    return (
        f"{spec} sha256:{sha256[:12]}" if spec.startswith(URI_SCHEMES) else f"sha256:{sha256[:12]}"
    )


def training_source(bundle: ModelBundle) -> str | None:
    """The data the model was trained on (`synthetic`, `huggingface`, `local`) as its file
    records it, None when it records none (`train` does not store it yet)."""
    source = bundle.params.get(SOURCE_KEY)
    return source if isinstance(source, str) and source else None


def caution(source: str | None) -> str | None:
    """What a reader of these predictions must know about the model's training data."""
    if source == "synthetic":
        return (
            f"this model was trained on synthetic OCT ({SOURCE_KEY}: synthetic): its outputs on "
            "real scans are not meaningful"
        )
    if source is None:
        return (
            f"this model file does not record the data it was trained on ({SOURCE_KEY}): "
            "check that it was trained on real OCT before trusting its outputs"
        )
    return None


def model_card(bundle: ModelBundle, path_or_uri: str, sha256: str) -> dict[str, Any]:
    """What model made a set of predictions, and what a reader must know about it (the
    `OUT.json` beside `olives predict`'s CSV holds it)."""
    source = training_source(bundle)
    return {
        "model": path_or_uri,
        "model_sha256": sha256,
        "data_source": source,
        "image_size": {"height": bundle.image_size[0], "width": bundle.image_size[1]},
        "resize": bundle.resize,
        "labels": list(bundle.labels),
        "thresholds": dict(zip(bundle.labels, map(float, bundle.thresholds), strict=True)),
        "clinical": list(bundle.clinical),
        "warning": caution(source),
    }


def registered(sha256: str) -> dict[str, Any]:
    """The registry's word on the model file (the project's MLflow store, or the one
    `MLFLOW_TRACKING_URI` names; never created): its version, and the champion's, logged."""
    found = identify(Tracker(TrackingConfig()), sha256)
    log.info("%s", found.words())
    return {"model_version": found.registered, "champion_version": found.champion}


def card_path(out: Path) -> Path:
    """`OUT.json` for the CSV `out` (refused when `out` is itself a .json)."""
    if out.suffix.lower() == ".json":
        raise InputError(f"--out {out}: give a .csv; its model card is written beside it as .json")
    return out.with_suffix(".json")


def chunks(scans: Iterable[Scan], size: int = CHUNK) -> Iterator[list[Scan]]:
    iterator = iter(scans)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def run(
    inputs: list[str],
    model: str,
    out: Path,
    by: str = "scan",
    gradcam_dir: Path | None = None,
    batch_size: int = INFERENCE_BATCH,
    volume_from: str = "file",
    tta: Sequence[str] = (),
    bcva: float | None = None,
    cst: float | None = None,
) -> pd.DataFrame:
    """Predict every scan of `inputs` into `out` (CSV) and its card `OUT.json`; `--by` adds
    `<out>.<by>.csv`; `tta` names test-time views (none by default); `bcva`/`cst` are the
    clinical values of every scan whose input gives none (`--bcva`, `--cst`)."""
    card_file = card_path(out)
    given = given_clinical({"BCVA": bcva, "CST": cst})
    path = model_file(model)
    sha256 = file_sha256(path)
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(path, runtime.device)
    check_clinical_inputs(given, bundle)
    card = model_card(bundle, model if model.startswith(URI_SCHEMES) else str(path), sha256)
    card |= registered(sha256)
    if card["warning"]:
        log.warning("%s", card["warning"])
    model_id = identity(model, sha256)
    predictor = Predictor(bundle, runtime, batch_size, True, model_id, tta=tuple(tta))
    table = predict_all(predictor, inputs, gradcam_dir, given)
    table["model_sha256"] = sha256
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    failed, doubtful = int(table["error"].notna().sum()), int(table["warning"].notna().sum())
    log.info(
        "%d scans predicted, %d not (see 'error'), %d with a warning (see 'warning'): %s",
        len(table) - failed,
        failed,
        doubtful,
        out,
    )
    files = {"scans": out.name}
    if by != "scan":
        grouped = aggregate(table, by, bundle, volume_from)
        grouped.to_csv(out.with_suffix(f".{by}.csv"), index=False)
        files[by] = out.with_suffix(f".{by}.csv").name
        log.info("%d %ss: %s", len(grouped), by, out.with_suffix(f".{by}.csv"))
    if gradcam_dir is not None:
        files["gradcam"] = str(gradcam_dir)
    counts = {"predicted": len(table) - failed, "failed": failed, "warned": doubtful}
    write_json(card_file, {**card, "tta": list(tta), "scans": counts, "files": files})
    return table


def given_clinical(values: dict[str, float | None]) -> dict[str, float]:
    """The per-call clinical values that were given, each checked by the rule the served model
    applies (`clinical_problem`); a refused one is an `InputError` naming its flag."""
    for name, value in values.items():
        problem = clinical_problem(name, value)
        if problem:
            raise InputError(f"{CLINICAL_FLAGS.get(name, name)}: {problem}")
    return {name: float(value) for name, value in values.items() if value is not None}


def check_clinical_inputs(given: dict[str, float], bundle: ModelBundle) -> None:
    """A value the model does not read is refused, never silently dropped."""
    for name in given:
        if name not in bundle.clinical:
            inputs = ", ".join(["image", *bundle.clinical])
            raise InputError(
                f"{CLINICAL_FLAGS.get(name, name)}: this model does not read {name} "
                f"(its inputs: {inputs})"
            )


def with_clinical(scans: Iterable[Scan], given: dict[str, float]) -> Iterator[Scan]:
    """`scans`, each missing value of `given` filled in (a value the input gives is kept)."""
    for scan in scans:
        for name, value in given.items():
            if scan.clinical.get(name) is None:
                scan.clinical[name] = value
        yield scan


def predict_all(
    predictor: Predictor,
    inputs: list[str],
    gradcam_dir: Path | None = None,
    clinical: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per scan of `inputs`, chunk by chunk (overlays too with `gradcam_dir`), with
    `clinical` where a scan's input gives no value; fails only when no scan could be read."""
    parts = []
    scans = with_clinical(
        read_scans(inputs, predictor.bundle.clinical, predictor.limits), clinical or {}
    )
    with tqdm(unit="scan", desc="predict") as bar:
        for chunk in chunks(scans):
            decoded = predictor.pixels(chunk)
            table = predictor.predict_pixels(chunk, decoded)
            if gradcam_dir is not None:  # predicted rows only (the table's errors are final)
                write_overlays(predictor, chunk, decoded, table, gradcam_dir)
            parts.append(table)
            bar.update(len(chunk))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ID_FIELDS)
    if table.empty or table["error"].notna().all():
        first = table["error"].dropna().head(1).tolist() if not table.empty else ["no input"]
        raise InputError(f"no scan could be read ({len(table)} tried): {first[0]}")
    return table
