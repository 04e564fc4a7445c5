"""The `evaluate` stage: test-split predictions, metrics with patient-bootstrap CIs, curves.

Outputs (all under `evaluate.out_dir`, default `reports/`):
- `predictions.csv`: image id, path, patient, eye, cache row, and per biomarker the truth,
  the probability (`<L>_prob`) and the decision at the validation-tuned threshold (`<L>_pred`);
- `vip_submission.csv`: the same decisions in the VIP Cup layout (path, then B1..B6);
- `metrics.json` (DVC metrics): `olives.metrics.evaluate_predictions` plus run context;
- `plots/{roc,pr,calibration}/<L>.csv` (DVC plots) and `figures/{roc,pr,reliability}.png`.
The metrics and figures are also logged to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from olives.config import Params
from olives.loader import SplitData, load_splits
from olives.metrics import evaluate_predictions
from olives.models import model_from_description
from olives.reporting import figures
from olives.tracking import Tracker
from olives.training import Runtime, predict

log = logging.getLogger(__name__)


def load_trained(model_path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The trained model and its saved bundle (thresholds, labels, stats, params)."""
    bundle = torch.load(model_path, map_location="cpu", weights_only=False)
    model = model_from_description(bundle["description"])
    model.load_state_dict(bundle["state_dict"])
    return model.to(device).eval(), bundle


def run_evaluate(params: Params) -> dict[str, Any]:
    runtime = Runtime.from_env()
    model, bundle = load_trained(Path(params.train.model_dir) / "model.pt", runtime.device)
    labels = tuple(bundle["labels"])
    test = load_splits(
        Path(params.preprocess.cache_dir),
        Path(params.split.out_dir),
        labels,
        tuple(bundle["clinical"]),
        names=("test",),
    )["test"]
    if len(test) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    probs = predict(model, test, params.train.batch_size, runtime, params.train.amp)
    thresholds = np.array([bundle["thresholds"][name] for name in labels])
    patients = test.frame[params.patient_column].to_numpy()
    metrics = evaluate_predictions(
        test.labels,
        probs,
        thresholds,
        patients,
        labels,
        n_boot=params.evaluate.bootstrap,
        ci=params.evaluate.ci,
        seed=params.seed,
    )
    metrics["context"] = {
        "data_source": params.data.source,
        "split": "test",
        "backbone": params.model.backbone,
        "fusion": params.model.fusion,
        "loss": params.loss.name,
        "seed": params.seed,
    }
    out = Path(params.evaluate.out_dir)
    write_predictions(out, test, probs, thresholds, labels, params)
    write_curves(out, test.labels, probs, labels)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log_to_training_run(params, metrics, out)
    return metrics


def write_predictions(
    out: Path,
    data: SplitData,
    probs: np.ndarray,
    thresholds: np.ndarray,
    labels: tuple[str, ...],
    params: Params,
) -> pd.DataFrame:
    frame = data.frame
    table = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "path": frame["path"],
            params.patient_column: frame[params.patient_column],
            "eye": frame["eye"],
            "row": frame["row"],
        }
    )
    decisions = (probs >= thresholds).astype(np.int8)
    for j, name in enumerate(labels):
        table[name] = data.labels[:, j].astype(np.int8)
        table[f"{name}_prob"] = probs[:, j].round(6)
        table[f"{name}_pred"] = decisions[:, j]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "predictions.csv", index=False)
    vip = pd.DataFrame({"Path": frame["path"]})
    for j, name in enumerate(labels):
        vip[name] = decisions[:, j]
    vip.to_csv(out / "vip_submission.csv", index=False)
    return table


def write_curves(out: Path, y_true: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]) -> None:
    """Per-biomarker ROC, PR and reliability points: DVC plots (CSV) and PNG grids.
    A biomarker with a single class in the test split has no curve (and says so)."""
    curves: dict[str, dict[str, pd.DataFrame]] = {"roc": {}, "pr": {}, "calibration": {}}
    for j, name in enumerate(labels):
        t, p = y_true[:, j], probs[:, j]
        if 0 < t.sum() < len(t):
            fpr, tpr, _ = roc_curve(t, p)
            precision, recall, _ = precision_recall_curve(t, p)
            curves["roc"][name] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
            curves["pr"][name] = pd.DataFrame({"recall": recall, "precision": precision})
        frac_pos, mean_pred = calibration_curve(t, p, n_bins=10, strategy="uniform")
        curves["calibration"][name] = pd.DataFrame(
            {"mean_predicted": mean_pred, "fraction_positive": frac_pos}
        )
    for kind, per_label in curves.items():
        folder = out / "plots" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in per_label.items():
            table.round(6).to_csv(folder / f"{name}.csv", index=False)
    figures.curve_grid(curves["roc"], "fpr", "tpr", "ROC", out / "figures/roc.png", diagonal=True)
    figures.curve_grid(
        curves["pr"], "recall", "precision", "Precision-recall", out / "figures/pr.png"
    )
    figures.curve_grid(
        curves["calibration"],
        "mean_predicted",
        "fraction_positive",
        "Reliability",
        out / "figures/reliability.png",
        diagonal=True,
        marker="o",
    )


def log_to_training_run(params: Params, metrics: dict[str, Any], out: Path) -> None:
    """Test metrics and figures go to the run that trained the model (resumed by id)."""
    run_file = Path(params.train.report_dir) / "mlflow_run.json"
    run_id = json.loads(run_file.read_text()).get("run_id") if run_file.is_file() else None
    if not params.tracking.enabled or run_id is None:
        return
    tracker = Tracker(params.tracking)
    flat = {f"test_{k}": v for k, v in flat_metrics(metrics).items()}
    with tracker.run(run_id=run_id):
        tracker.log_metrics(flat)
        for name in ("metrics.json", "predictions.csv", "vip_submission.csv"):
            tracker.log_artifact(out / name, "evaluate")
        for fig in ("roc.png", "pr.png", "reliability.png"):
            tracker.log_artifact(out / "figures" / fig, "evaluate")


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Point estimates only: `macro_auroc`, `B1_f1`, `vip_phase1`, ..."""
    flat: dict[str, float] = {}
    for avg in ("macro", "micro"):
        for key, value in metrics[avg].items():
            if isinstance(value, float):
                flat[f"{avg}_{key}"] = value
    for name, entry in metrics["per_label"].items():
        for key, value in entry.items():
            if isinstance(value, float) and key != "threshold":
                flat[f"{name}_{key}"] = value
    for score in ("vip_phase1", "vip_phase2"):
        if isinstance(metrics.get(score), float):
            flat[score] = metrics[score]
    return flat
