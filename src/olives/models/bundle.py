"""The trained-model bundle: weights plus everything needed to use them, in one file.

`train` writes it once (`ModelBundle.save`); evaluate, report, the MLflow wrapper and any later
command read it through `ModelBundle.load`, never by key. Besides the weights it carries what a
user of the model needs and cannot guess: the label and clinical names in output/input order,
the per-biomarker temperatures that calibrate its probabilities and the thresholds tuned on the
calibrated validation probabilities, the train-split statistics that standardise BCVA/CST and
impute missing values, and the image size and resize policy the model was trained at.

The file is safetensors: the weights plus one JSON metadata entry. Opening a model file cannot
run code (unlike a pickle), and the same weights always give the same bytes (`torch.save`
writes a random serialization id), so DVC's hash of `models/` changes only when the model does.
The metadata records a SHA-256 digest of the weights (`weights.weights_digest`), checked on
every load: one flipped bit in a weight would otherwise pass unnoticed and change every
prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from olives.errors import InputError
from olives.evaluation.calibration import calibrated
from olives.models.fusion import BiomarkerNet, model_from_description
from olives.models.weights import MODEL_KEY, digest_problem, weights_digest

if TYPE_CHECKING:
    from olives.models.ensemble import EnsembleNet

FILE = "model.safetensors"
FORMAT = 1
_KEY = MODEL_KEY  # the one metadata entry (several would be written in a random order)


class BundleError(InputError):
    """A model file is not a bundle this version can read."""


@dataclass
class ModelBundle:
    """A trained `BiomarkerNet` (or an `EnsembleNet` of them, `olives.models.ensemble`) and
    what it needs to be used on new scans."""

    model: BiomarkerNet | EnsembleNet
    labels: tuple[str, ...]
    clinical: tuple[str, ...]
    thresholds: tuple[float, ...]
    clinical_stats: dict[str, dict[str, float]]
    image_size: tuple[int, int]
    resize: str = "stretch"
    best_epoch: int = -1
    params: dict[str, Any] = field(default_factory=dict)
    temperatures: tuple[float, ...] | None = None  # None: uncalibrated (T = 1)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.temperatures is None:
            self.temperatures = (1.0,) * n
        for name, values in (("thresholds", self.thresholds), ("temperatures", self.temperatures)):
            if len(values) != n:
                raise BundleError(f"{len(values)} {name} for {n} labels {self.labels}")

    def threshold_array(self) -> np.ndarray:
        return np.asarray(self.thresholds, dtype=np.float64)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, L] from the model's logits (what thresholds apply to)."""
        return calibrated(logits, np.asarray(self.temperatures))

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready."""
        return {
            "format": FORMAT,
            "description": self.model.describe(),
            "labels": list(self.labels),
            "clinical": list(self.clinical),
            "thresholds": [float(t) for t in self.thresholds],
            "temperatures": [float(t) for t in self.temperatures or ()],
            "clinical_stats": self.clinical_stats,
            "image_size": list(self.image_size),
            "resize": self.resize,
            "best_epoch": int(self.best_epoch),
            "params": self.params,
        }

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        meta = {**self.metadata(), "weights_sha256": weights_digest(weights)}
        save_file(weights, str(path), metadata={_KEY: json.dumps(meta, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
        """Read `path` (the file, or the folder holding it); the model is in eval mode on
        `device` (channels-last on a CPU)."""
        path = Path(path)
        path = path / FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file not found; run `olives stage train` first")
        try:
            with safe_open(str(path), "pt") as handle:
                meta = json.loads((handle.metadata() or {})[_KEY])
            weights = load_file(str(path))
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise BundleError(f"{path}: not an olives model file ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise BundleError(f"{path}: model format {meta.get('format')}, expected {FORMAT}")
        _check_digest(path, meta.get("weights_sha256"), weights)
        return cls.from_metadata(meta, weights, device)

    @classmethod
    def from_metadata(
        cls,
        meta: dict[str, Any],
        weights: dict[str, torch.Tensor],
        device: torch.device | str = "cpu",
    ) -> ModelBundle:
        model = _model_of(meta)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()
            raise BundleError(f"weights do not fit the model they describe: {first}") from exc
        model = model.to(device).eval()
        if torch.device(device).type == "cpu":  # oneDNN: 1.5x faster Lite0 inference on a CPU
            model.to(memory_format=torch.channels_last)
        return cls(
            model=model,
            labels=tuple(meta["labels"]),
            clinical=tuple(meta["clinical"]),
            thresholds=tuple(meta["thresholds"]),
            clinical_stats=meta["clinical_stats"],
            image_size=(int(meta["image_size"][0]), int(meta["image_size"][1])),
            resize=meta["resize"],
            best_epoch=int(meta["best_epoch"]),
            params=meta["params"],
            temperatures=tuple(meta.get("temperatures") or ()) or None,
        )


def _model_of(meta: dict[str, Any]) -> BiomarkerNet | EnsembleNet:
    """The architecture the metadata describes: one model, or an ensemble (whose input
    statistics must be the bundle's own: the caller standardises with those)."""
    from olives.models.ensemble import ensemble_from_description, is_ensemble

    description = meta["description"]
    if not is_ensemble(description):
        return model_from_description(description)
    if description.get("clinical_stats") != {
        name: meta["clinical_stats"].get(name) for name in meta["clinical"]
    }:
        raise BundleError("the ensemble's input statistics differ from the bundle's clinical_stats")
    return ensemble_from_description(description)


def _check_digest(path: Path, recorded: Any, weights: dict[str, torch.Tensor]) -> None:
    """Refuse weights that differ from the digest `save` recorded (`weights.digest_problem`)."""
    problem = digest_problem(path, recorded, weights)
    if problem:
        raise BundleError(problem)
