"""`evaluate`: test-split predictions, metrics with patient-bootstrap intervals, curves.

Outputs under `evaluate.out_dir` (see `olives.io.EvaluateFiles`): `predictions.csv` (per
scan and biomarker: truth, probability `<L>_prob`, decision at the tuned threshold `<L>_pred`),
`vip_submission.csv` and `vip_labels.csv` (decisions and truth in the VIP Cup layout),
`metrics.json` (every metric with its interval, per B-scan and, under `per_volume`, per
volume), `summary.json` (the headline numbers DVC shows), `plots/` (DVC plots) and `figures/`.
With `evaluate.tta` every number is of the mean logit over the identity and those views
(`olives.models.inference`), and `metrics.json`'s `context.tta` says which.
MLflow gets them from the `track` stage (`olives.stages.track`), which runs after every
`dvc repro`, also when DVC skips or restores this stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from olives.config import Params
from olives.data.loader import SplitData, split_of
from olives.data.volumes import volume_table
from olives.errors import InputError
from olives.evaluation.calibration import calibration_table
from olives.evaluation.intervals import evaluate_predictions
from olives.evaluation.metrics import curve_tables
from olives.evaluation.volumes import volume_metrics
from olives.io import EvaluateFiles, file_sha256, recorded_source, write_json
from olives.models import ModelBundle
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.inference import split_logits
from olives.reporting import figures
from olives.runtime import Runtime

log = logging.getLogger(__name__)

PARAMS = (
    "seed",
    "patient_column",
    "evaluate.bootstrap",
    "evaluate.ci",
    "evaluate.batch_size",
    "evaluate.amp",
    "evaluate.tta",
)
# `summary.json`, what `dvc metrics show` / `dvc exp show` list: test split, macro averages.
SUMMARY = {
    "test_auroc": ("macro", "auroc"),
    "test_ap": ("macro", "average_precision"),
    "test_f1": ("macro", "f1"),
    "vip1": (None, "vip_phase1"),
    "vip2": (None, "vip_phase2"),
}


def run(params: Params) -> dict[str, Any]:
    cfg = params.evaluate
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(params.train.model_dir, runtime.device)
    test = split_of(params, "test", bundle.labels, bundle.clinical)
    if len(test) == 0:
        raise InputError(f"the test split in {params.split.out_dir} is empty: nothing to evaluate")
    logits = split_logits(bundle.model, test, runtime, cfg, cfg.tta)
    probs = bundle.probabilities(logits)
    thresholds, patient = bundle.threshold_array(), params.patient_column
    metrics = evaluate_predictions(
        test.labels,
        probs,
        thresholds,
        test.frame[patient].to_numpy(),
        bundle.labels,
        n_boot=cfg.bootstrap,
        ci=cfg.ci,
        seed=params.seed,
    )
    temperatures = np.asarray(bundle.temperatures)
    metrics["calibration"] = calibration_table(test.labels, logits, temperatures, bundle.labels)
    files = EvaluateFiles(Path(cfg.out_dir))
    table = write_predictions(files, test, probs, bundle, patient)
    # Per volume from the unrounded probabilities (the CSV holds 6 decimals): a volume's
    # probability reaches the threshold exactly when one of its scans' `_pred` is 1.
    exact = table.assign(**{f"{n}_prob": probs[:, j] for j, n in enumerate(bundle.labels)})
    volumes = volume_table(exact, bundle.labels, patient)
    metrics["per_volume"] = volume_metrics(
        volumes, bundle.labels, thresholds, patient, cfg.bootstrap, cfg.ci, params.seed
    )
    metrics["context"] = context(params, bundle)
    write_curves(files, test.labels, probs, bundle.labels)
    write_json(files.metrics, metrics)
    write_json(files.summary, summary(metrics))
    log.info("test: %s", ", ".join(f"{k} {v:.4f}" for k, v in summary(metrics).items() if v))
    return metrics


def context(params: Params, bundle: ModelBundle) -> dict[str, Any]:
    """What produced these numbers (read from the model file, not the current params)."""
    return {
        "data_source": recorded_source(params.data.report),
        "split": "test",
        "model_sha256": file_sha256(Path(params.train.model_dir) / MODEL_FILE),
        "backbone": bundle.model.cfg.backbone,
        "fusion": bundle.model.cfg.fusion,
        "loss": bundle.params.get("loss.name"),
        "seed": bundle.params.get("seed"),
        "pretrained": bundle.params.get("model.pretrained"),
        "freeze_backbone": bundle.params.get("train.freeze_backbone"),
        "tta": list(params.evaluate.tta),  # test-time views beside the identity ([]: none)
    }


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The few numbers `dvc metrics show` and `dvc exp show` list (short names: narrow
    columns)."""
    return {
        name: (metrics[block] if block else metrics)[key] for name, (block, key) in SUMMARY.items()
    }


def write_predictions(
    files: EvaluateFiles,
    data: SplitData,
    probs: np.ndarray,
    bundle: ModelBundle,
    patient_column: str,
) -> pd.DataFrame:
    frame = data.frame
    table = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "path": frame["path"],
            patient_column: frame[patient_column],
            "eye": frame["eye"],
            "row": frame["row"],
        }
    )
    decisions = (probs >= bundle.threshold_array()).astype(np.int8)
    for j, name in enumerate(bundle.labels):
        table[name] = data.labels[:, j].astype(np.int8)
        table[f"{name}_prob"] = probs[:, j].round(6)
        table[f"{name}_pred"] = decisions[:, j]
    files.root.mkdir(parents=True, exist_ok=True)
    table.to_csv(files.predictions, index=False)
    for path, values in ((files.vip_submission, decisions), (files.vip_labels, data.labels)):
        vip = pd.DataFrame({"Path": frame["path"]})
        for j, name in enumerate(bundle.labels):
            vip[name] = values[:, j].astype(np.int8)
        vip.to_csv(path, index=False)
    return table


def write_curves(
    files: EvaluateFiles, y_true: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]
) -> None:
    """Per-biomarker ROC, PR and reliability points (DVC plots) and one PNG grid per kind."""
    curves = curve_tables(y_true, probs, labels)
    for kind, per_label in curves.items():
        folder = files.curve_dir(kind)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in per_label.items():
            table.round(6).to_csv(folder / f"{name}.csv", index=False)
    figures.curve_grid(curves["roc"], "fpr", "tpr", "ROC", files.figure("roc"), diagonal=True)
    figures.curve_grid(curves["pr"], "recall", "precision", "Precision-recall", files.figure("pr"))
    figures.curve_grid(
        curves["calibration"],
        "mean_predicted",
        "fraction_positive",
        "Reliability",
        files.figure("reliability"),
        diagonal=True,
        marker="o",
    )
