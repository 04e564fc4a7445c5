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
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from olives.data.decode import DecodeError, load_scan, resize, to_uint8_grey
from olives.data.loader import BatchSource, SplitData
from olives.data.prepare import clinical_features, fill_clinical
from olives.data.schema import Columns
from olives.data.volumes import mixed_patients, volume_of
from olives.errors import InputError
from olives.models import ModelBundle
from olives.models.inference import predict_logits
from olives.runtime import Runtime
from olives.serving.scans import Scan

GROUPS = {"volume": ["volume"], "eye": ["patient", "eye"], "visit": ["patient", "eye", "visit"]}
ID_FIELDS = ("source", "index", "patient", "eye", "visit", "volume")


@dataclass
class Predictor:
    """A model bundle on a device, ready for lists of `Scan`s."""

    bundle: ModelBundle
    runtime: Runtime
    batch_size: int = 64
    amp: bool = True
    model_id: str = ""

    def pixels(self, scans: list[Scan]) -> tuple[np.ndarray, list[str | None]]:
        """uint8 [N, H, W] at the model's size (zeros where a scan failed) and the errors."""
        height, width = self.bundle.image_size
        out = np.zeros((len(scans), height, width), dtype=np.uint8)

        def one(scan: Scan) -> np.ndarray | str:
            if scan.error:
                return scan.error
            try:
                if scan.data is not None:
                    return load_scan(scan.data, height, width, self.bundle.resize)
                grey = to_uint8_grey(np.asarray(scan.pixels))
                return resize(grey, height, width, self.bundle.resize)
            except DecodeError as exc:
                return f"{scan.source}: {exc}"

        errors: list[str | None] = []
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for i, result in enumerate(pool.map(one, scans)):
                if isinstance(result, str):
                    errors.append(result)
                else:
                    out[i] = result
                    errors.append(None)
        return out, errors

    def clinical(self, scans: list[Scan]) -> tuple[np.ndarray, pd.DataFrame]:
        """Model features (standardised values, missing flags) and the raw values + flags."""
        names = self.bundle.clinical
        raw = pd.DataFrame(
            {name: [s.clinical.get(name) for s in scans] for name in names}, dtype="float64"
        )
        stats = {"clinical": self.bundle.clinical_stats}
        filled = fill_clinical(
            raw.copy(),
            stats,
            Columns(image="", labels=self.bundle.labels, clinical=names, patient="", eye=None),
        )
        shown = raw.copy()
        for name in names:
            shown[f"{name}_imputed"] = filled[f"{name}_missing"].astype(np.int8)
        return clinical_features(filled, names), shown

    def predict(self, scans: list[Scan]) -> pd.DataFrame:
        """One row per scan: ids, clinical values and flags, probability and decision per
        biomarker, the error if it could not be read, and the model's identity."""
        return self.predict_pixels(scans, *self.pixels(scans))

    def predict_pixels(
        self, scans: list[Scan], images: np.ndarray, errors: list[str | None]
    ) -> pd.DataFrame:
        """`predict` on scans already decoded by `pixels`."""
        features, clinical = self.clinical(scans)
        ok = np.array([e is None for e in errors], dtype=bool)
        probs = np.full((len(scans), len(self.bundle.labels)), np.nan)
        if ok.any():
            probs[ok] = self._probabilities(images[ok], features[ok])
        table = pd.DataFrame({f: [getattr(s, f) for s in scans] for f in ID_FIELDS})
        table = pd.concat([table, clinical], axis=1)
        thresholds = self.bundle.threshold_array()
        for j, name in enumerate(self.bundle.labels):
            table[f"{name}_prob"] = np.round(probs[:, j], 6)
            decided = (probs[:, j] >= thresholds[j]).astype(float)
            table[f"{name}_pred"] = pd.array(np.where(ok, decided, np.nan), dtype="Int8")
        table["error"] = errors
        table["model"] = self.model_id
        return table

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
        )
        return self.bundle.probabilities(self.runtime.to_host(logits))


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
