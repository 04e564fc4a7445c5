"""`olives predict INPUT... [--model] [--out] [--by] [--gradcam DIR]`: the command.

Reads scans (`olives.serving.scans`) in chunks, predicts them
(`olives.serving.predictor.Predictor`) on the GPU when there is one, writes one CSV row per scan
(and per volume, eye or visit with `--by`), and Grad-CAM overlays per scan and biomarker with
`--gradcam`. An unreadable scan gets its `error` and the run goes on; the command fails only
when nothing could be read. Every input the user names gets at least one row, and a row that is
predicted but doubtful says why in `warning` (`olives.serving.scans`, `olives.serving.predictor`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from olives.config import EvaluateConfig
from olives.errors import InputError
from olives.io import file_sha256
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.runtime import Runtime
from olives.serving.predictor import ID_FIELDS, Predictor, aggregate
from olives.serving.scans import Scan, read_scans

log = logging.getLogger(__name__)

INFERENCE_BATCH = EvaluateConfig().batch_size  # one inference batch size: evaluate.batch_size
CHUNK = 512  # scans decoded and predicted together (bounds memory)


def write_overlays(
    predictor: Predictor,
    scans: list[Scan],
    images: np.ndarray,
    errors: Sequence[str | None],
    folder: Path,
) -> None:
    """`<folder>/<file>-<hash>_<index>_<label>.png`: the scan at the model's size with the
    Grad-CAM of that biomarker's logit (red = strongest support for a positive)."""
    import matplotlib.image
    import torch

    from olives.models.gradcam import grad_cam, overlay

    model = predictor.bundle.model
    if model.backbone is None:
        raise InputError("--gradcam: this model uses clinical values only: no image to explain")
    folder.mkdir(parents=True, exist_ok=True)
    features, _ = predictor.clinical(scans)
    keep = [i for i, e in enumerate(errors) if e is None]
    for start in range(0, len(keep), predictor.batch_size):
        rows = keep[start : start + predictor.batch_size]
        x = predictor.runtime.to_device(torch.from_numpy(images[rows]).unsqueeze(1).float() / 255)
        clinical = predictor.runtime.to_device(torch.from_numpy(features[rows]))
        for j, label in enumerate(predictor.bundle.labels):
            cams = grad_cam(model, x, clinical, j)
            for k, i in enumerate(rows):
                name = f"{_stem(scans[i].source)}_{scans[i].index:03d}_{label}.png"
                matplotlib.image.imsave(folder / name, overlay(images[i], cams[k]))


def _stem(source: str) -> str:
    """A file name for a source path: its stem plus a short hash of the whole path."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).stem)
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:6]}"


def resolve_model(spec: str) -> tuple[Path, str]:
    """The local model file and its identity for `--model`: a path (file or folder), or an
    MLflow URI (`models:/<name>/<version or @alias>`, `runs:/<id>/model`)."""
    if spec.startswith(("models:/", "runs:/")):
        import mlflow

        folder = Path(mlflow.artifacts.download_artifacts(spec))
        found = sorted(folder.rglob(MODEL_FILE))
        if not found:
            raise InputError(f"{spec}: the MLflow model holds no {MODEL_FILE}")
        return found[0], f"{spec} sha256:{file_sha256(found[0])[:12]}"
    path = Path(spec)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: model file not found (a path, models:/... or runs:/...)")
    return path, f"sha256:{file_sha256(path)[:12]}"


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
) -> pd.DataFrame:
    """Predict every scan of `inputs` into `out` (CSV); `--by` adds `<out>.<by>.csv`."""
    path, identity = resolve_model(model)
    runtime = Runtime.from_env()
    predictor = Predictor(
        ModelBundle.load(path, runtime.device), runtime, batch_size, True, identity
    )
    parts = []
    with tqdm(unit="scan", desc="predict") as bar:
        for chunk in chunks(read_scans(inputs, predictor.bundle.clinical, predictor.limits)):
            decoded = predictor.pixels(chunk)
            table = predictor.predict_pixels(chunk, decoded)
            if gradcam_dir is not None:  # predicted rows only (the table's errors are final)
                errors = [None if pd.isna(e) else e for e in table["error"]]
                write_overlays(predictor, chunk, decoded.images, errors, gradcam_dir)
            parts.append(table)
            bar.update(len(chunk))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ID_FIELDS)
    if table.empty or table["error"].notna().all():
        first = table["error"].dropna().head(1).tolist() if not table.empty else ["no input"]
        raise InputError(f"no scan could be read ({len(table)} tried): {first[0]}")
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
    if by != "scan":
        grouped = aggregate(table, by, predictor.bundle, volume_from)
        grouped.to_csv(out.with_suffix(f".{by}.csv"), index=False)
        log.info("%d %ss: %s", len(grouped), by, out.with_suffix(f".{by}.csv"))
    return table
