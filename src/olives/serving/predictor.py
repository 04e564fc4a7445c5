"""The core of `olives predict` and of the MLflow model: a trained model on new scans,
preprocessed exactly as in training.

Each scan is decoded and resized by the preprocess stage's own functions to the model's size
and resize policy; BCVA/CST are standardised with the training statistics stored in the model,
and a missing value is imputed with the training median and flagged (`<C>_imputed`), as in
training, never silently zero. Probabilities are calibrated with the model's temperatures and
decided at its tuned thresholds. `olives.serving.predict` (the command) and the MLflow model
(`olives.serving.pyfunc`) both run this `Predictor`.

Aggregation (`--by volume|eye|visit`): a biomarker is present in a group when any of its scans
is, and the group's probability is the largest of its scans' (the two agree: max >= threshold
exactly when one scan is over it). Groups: volume (`olives.data.volumes`: the id the input
states, else one volume per file, or per folder with `volume_from="folder"`); eye = (patient,
eye); visit = (patient, eye, visit).

Checks, so that no row is a silent guess (`olives.serving.scans` lists the input errors):
- errors (no probability, no decision): what `Scan.error` says; an image over the limits or
  with a side under `limits.min_side` (`olives.data.decode`); a clinical value that is not
  finite or outside its plausible range (`clinical_problem`: BCVA 1e308 would make every
  probability NaN); a non-finite probability from the model, never read as "absent".
- warnings (predicted, `warning` column): the scan's own (a DICOM with no Modality); an image
  smaller than the model's input on some axis (upsampled: detail is invented); a constant
  image (every pixel the same: no signal, e.g. all black).
One bad row never stops the others: each is an error row and the rest are predicted.
Decoding runs on `decode_threads` threads per call (default `min(4, cores)`), so concurrent
calls (a server) do not each decode on every core.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from olives.data.decode import (
    DEFAULT_LIMITS,
    DecodeError,
    ImageLimits,
    check_size,
    decode_scan,
    resize,
    to_uint8_grey,
    upsampled,
)
from olives.data.loader import BatchSource, SplitData
from olives.data.prepare import clinical_features, fill_clinical
from olives.data.schema import Columns, clinical_problem
from olives.data.volumes import mixed_patients, volume_of
from olives.errors import InputError
from olives.models import ModelBundle
from olives.models.inference import predict_logits
from olives.runtime import Runtime
from olives.serving.scans import Scan, clinical_error

GROUPS = {"volume": ["volume"], "eye": ["patient", "eye"], "visit": ["patient", "eye", "visit"]}
ID_FIELDS = ("source", "index", "patient", "eye", "visit", "volume")


def _default_threads() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass
class Decoded:
    """Scans at the model's size: uint8 [N, H, W] (zeros where a scan failed), and per scan
    its error or None, its warning or None, and its decoded (height, width) before resizing
    (None where it failed: Grad-CAM overlays are drawn at the scan's own aspect ratio)."""

    images: np.ndarray
    errors: list[str | None]
    warnings: list[str | None]
    shapes: list[tuple[int, int] | None] = field(default_factory=list)


@dataclass
class Predictor:
    """A model bundle on a device, ready for lists of `Scan`s."""

    bundle: ModelBundle
    runtime: Runtime
    batch_size: int = 64
    amp: bool = True
    model_id: str = ""
    limits: ImageLimits = DEFAULT_LIMITS
    decode_threads: int = field(default_factory=_default_threads)
    tta: tuple[str, ...] = ()  # test-time views (`olives.models.inference`); () for none

    def __post_init__(self) -> None:
        if self.decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1, got {self.decode_threads}")

    def pixels(self, scans: list[Scan]) -> Decoded:
        """Decode and resize every scan as the preprocess stage does, within `limits`, on
        `decode_threads` threads."""
        height, width = self.bundle.image_size
        out = np.zeros((len(scans), height, width), dtype=np.uint8)
        errors: list[str | None] = []
        warnings: list[str | None] = []
        shapes: list[tuple[int, int] | None] = []
        with ThreadPoolExecutor(self.decode_threads) as pool:
            for i, (scan, result) in enumerate(zip(scans, pool.map(self._one, scans), strict=True)):
                if isinstance(result, str):
                    errors.append(result)
                    warnings.append(scan.warning)
                    shapes.append(None)
                else:
                    out[i], found, shape = result
                    errors.append(None)
                    warnings.append(_join(scan.warning, found))
                    shapes.append(shape)
        return Decoded(out, errors, warnings, shapes)

    def _one(self, scan: Scan) -> tuple[np.ndarray, str | None, tuple[int, int]] | str:
        """One scan at the model's size, its warning and its decoded shape, or its error."""
        if scan.error:
            return scan.error
        height, width = self.bundle.image_size
        try:
            if scan.data is not None:
                grey = decode_scan(scan.data, self.limits)
            elif scan.pixels is not None:
                check_size(*np.shape(scan.pixels)[:2], self.limits)
                grey = to_uint8_grey(np.asarray(scan.pixels))
            else:
                return f"{scan.source}: no image"
        except DecodeError as exc:
            return f"{scan.source}: {exc}"
        shape = (int(grey.shape[0]), int(grey.shape[1]))
        return resize(grey, height, width, self.bundle.resize), self._warning(grey), shape

    def _warning(self, grey: np.ndarray) -> str | None:
        """What to doubt about a decoded scan (see the module docstring)."""
        height, width = self.bundle.image_size
        found = []
        if upsampled(grey.shape, height, width, self.bundle.resize):
            found.append(
                f"image is {grey.shape[1]} x {grey.shape[0]}, smaller than the model's "
                f"{width} x {height} input: upsampled"
            )
        low, high = int(grey.min()), int(grey.max())
        if low == high:
            found.append(f"constant image (every pixel is {low}): no signal")
        return _join(*found)

    def clinical(self, scans: list[Scan]) -> tuple[np.ndarray, pd.DataFrame]:
        """Model features (standardised values, missing flags) and the raw values + flags.
        A value `clinical_problem` refuses is left out of the features (its row is an error
        row and is not predicted) rather than overflowing them."""
        names = self.bundle.clinical
        raw = pd.DataFrame(
            {name: [s.clinical.get(name) for s in scans] for name in names}, dtype="float64"
        )
        usable = raw.copy()
        for name in names:
            usable[name] = raw[name].where(raw[name].map(lambda v, n=name: _plausible(n, v)))
        stats = {"clinical": self.bundle.clinical_stats}
        filled = fill_clinical(
            usable,
            stats,
            Columns(image="", labels=self.bundle.labels, clinical=names, patient="", eye=None),
        )
        shown = raw.copy()
        for name in names:
            shown[f"{name}_imputed"] = raw[name].isna().astype(np.int8)
        return clinical_features(filled, names), shown

    def predict(self, scans: list[Scan]) -> pd.DataFrame:
        """One row per scan: ids, clinical values and flags, probability and decision per
        biomarker, the error if it could not be predicted, its warning, the model's identity."""
        return self.predict_pixels(scans, self.pixels(scans))

    def predict_pixels(self, scans: list[Scan], decoded: Decoded) -> pd.DataFrame:
        """`predict` on scans already decoded by `pixels`; clinical values are checked here, so
        every caller (the command, the served model) gets the same rule."""
        names = self.bundle.clinical
        errors = [
            e or _clinical_error(s, names) for s, e in zip(scans, decoded.errors, strict=True)
        ]
        features, clinical = self.clinical(scans)
        probs = self._checked_probabilities(scans, decoded.images, features, errors)
        ok = np.array([e is None for e in errors], dtype=bool)
        table = pd.DataFrame({f: [getattr(s, f) for s in scans] for f in ID_FIELDS})
        table = pd.concat([table, clinical], axis=1)
        thresholds = self.bundle.threshold_array()
        for j, name in enumerate(self.bundle.labels):
            table[f"{name}_prob"] = np.round(probs[:, j], 6)
            decided = (probs[:, j] >= thresholds[j]).astype(float)
            table[f"{name}_pred"] = pd.array(np.where(ok, decided, np.nan), dtype="Int8")
        table["error"] = errors
        table["warning"] = decoded.warnings
        table["model"] = self.model_id
        return table

    def _checked_probabilities(
        self, scans: list[Scan], images: np.ndarray, features: np.ndarray, errors: list[str | None]
    ) -> np.ndarray:
        """Probabilities of the rows without an error (NaN elsewhere). A row the model gives a
        non-finite probability becomes an error row here (in `errors`): NaN is no decision."""
        ok = np.array([e is None for e in errors], dtype=bool)
        probs = np.full((len(scans), len(self.bundle.labels)), np.nan)
        if ok.any():
            probs[ok] = self._probabilities(images[ok], features[ok])
        for i in np.flatnonzero(ok & ~np.isfinite(probs).all(axis=1)):
            bad = ", ".join(np.asarray(self.bundle.labels)[~np.isfinite(probs[i])])
            errors[i] = f"{scans[i].source}: the model gave no finite probability for {bad}"
            probs[i] = np.nan
        return probs

    def _probabilities(self, images: np.ndarray, features: np.ndarray) -> np.ndarray:
        n, labels = len(images), len(self.bundle.labels)
        data = SplitData(
            images, np.arange(n), np.zeros((n, labels), np.float32), features, pd.DataFrame()
        )
        logits = predict_logits(
            self.bundle.model,
            BatchSource(data, self.runtime),
            self.runtime,
            self.batch_size,
            self.amp,
            self.tta,
        )
        return self.bundle.probabilities(self.runtime.to_host(logits))


def _join(*parts: str | None) -> str | None:
    """Warnings as one text ("; "-separated), None when there is none."""
    kept = [p for p in parts if p]
    return "; ".join(kept) if kept else None


def _plausible(name: str, value: float) -> bool:
    return bool(np.isnan(value)) or clinical_problem(name, value) is None


def _clinical_error(scan: Scan, names: tuple[str, ...]) -> str | None:
    """The scan's first clinical value the model may not see; NaN is missing, as in `clinical`."""
    values = {n: scan.clinical.get(n) for n in names}
    values = {n: None if v is None or np.isnan(v) else v for n, v in values.items()}
    problem = clinical_error(values)
    return f"{scan.source}: {problem}" if problem else None


def aggregate(
    table: pd.DataFrame, by: str, bundle: ModelBundle, volume_from: str = "file"
) -> pd.DataFrame:
    """One row per group of readable scans (see the module docstring for the rule)."""
    keys = GROUPS[by]
    ok = table[table["error"].isna()]
    if by == "volume":
        ok = ok.assign(volume=scan_volumes(ok, volume_from))
    grouped = ok.groupby(keys, dropna=False, sort=True)
    out = grouped.size().rename("scans").reset_index()
    thresholds = bundle.threshold_array()
    for j, name in enumerate(bundle.labels):
        peak = grouped[f"{name}_prob"].max().to_numpy()
        out[f"{name}_prob"] = peak
        out[f"{name}_pred"] = (peak >= thresholds[j]).astype(np.int8)
    return out


def scan_volumes(table: pd.DataFrame, volume_from: str) -> pd.Series:
    """Each scan's volume: the id its input states, else `volume_of` its source."""
    implied = table["source"].map(lambda source: volume_of(source, volume_from))
    volumes = table["volume"].where(table["volume"].notna(), implied)
    reason = mixed_patients(volumes, table["patient"])
    if reason:
        raise InputError(f"cannot group by volume: {reason} (name volumes in metadata.csv)")
    return volumes
