"""Where the train, evaluate and report stages write: every file name in one place.

Folders come from the params that name them (`train.report_dir`, `evaluate.out_dir`,
`report.out_dir`); the files inside are fixed here, and both the stage that writes a file and
the stage that reads it take its path from this module. The cache, split and model files have
owners of their own (`data.cache.open_cache`, `data.prepare.read_index`, `ModelBundle.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CURVES = ("roc", "pr", "calibration")


@dataclass(frozen=True)
class PretrainFiles:
    """`pretrain.out_dir`: the pre-trained encoder and its record."""

    root: Path

    @property
    def encoder(self) -> Path:
        return self.root / "encoder.safetensors"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def summary(self) -> Path:
        return self.root / "pretrain.json"


@dataclass(frozen=True)
class TrainFiles:
    """`train.report_dir`: the training record beside the model."""

    root: Path

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def val_per_label(self) -> Path:
        return self.root / "val_per_label.csv"

    @property
    def params(self) -> Path:
        return self.root / "params.json"

    @property
    def learning_curves(self) -> Path:
        return self.root / "learning_curves.png"


@dataclass(frozen=True)
class EvaluateFiles:
    """`evaluate.out_dir`: test predictions, metrics, curves."""

    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def vip_submission(self) -> Path:
        return self.root / "vip_submission.csv"

    @property
    def vip_labels(self) -> Path:
        """The test split's true labels in the VIP Cup layout (what `olives score` reads)."""
        return self.root / "vip_labels.csv"

    @property
    def metrics(self) -> Path:
        """Every metric with its interval (the report reads it)."""
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        """The few headline numbers that DVC shows as metrics."""
        return self.root / "summary.json"

    def curve_dir(self, kind: str) -> Path:
        """`plots/<kind>/<label>.csv` (DVC plots), kind in `CURVES`."""
        return self.root / "plots" / kind

    def figure(self, kind: str) -> Path:
        return self.root / "figures" / f"{kind}.png"


@dataclass(frozen=True)
class ReportFiles:
    """`report.out_dir`: the Markdown report, its tables and gallery figures."""

    root: Path

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def gallery(self) -> Path:
        return self.root / "figures" / "report"


@dataclass(frozen=True)
class PaperFiles:
    """`paper.out_dir`: one folder per ablation cell, then the aggregated tables."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def cell(self, name: str) -> Path:
        """`runs/<cell>/` holding `model/`, `train/` and `eval/` of that cell."""
        return self.runs / name

    def cell_evaluation(self, cell: Path) -> EvaluateFiles:
        return EvaluateFiles(cell / "eval")

    @property
    def init_runs(self) -> Path:
        """`init/<init>-<mode>-s<seed>/`: the initialisation axis's cells, laid out as `runs/`."""
        return self.root / "init"

    def encoder(self, seed: int) -> Path:
        """`pretrain/s<seed>/`: the contrastive encoder of one seed (`PretrainFiles` layout)."""
        return self.root / "pretrain" / f"s{seed}"
