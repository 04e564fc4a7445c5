"""What the report's sections read, loaded and checked once, and the helpers they share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import BIOMARKER_NAMES, Params
from olives.data.prepare import SUMMARY, read_index
from olives.data.volumes import volume_ids
from olives.errors import InputError
from olives.io import EvaluateFiles, ReportFiles, read_json, recorded_source
from olives.models import ModelBundle
from olives.reporting.tables import latex_table, markdown_table


@dataclass(frozen=True)
class ReportInputs:
    """Everything the sections read, loaded and checked once."""

    params: Params
    out_dir: Path
    labels: tuple[str, ...]
    bundle: ModelBundle
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    index: pd.DataFrame
    splits: dict[str, Any]
    raw_report: dict[str, Any]
    source: str  # recorded by `download` (data/raw_report.json), not read from the params
    volumes: pd.DataFrame | str  # per-scan `volume` and `visit`, or why there are none

    def link(self, target: Path) -> str:
        """`target` relative to report.md, with forward slashes (Markdown links)."""
        return Path(os.path.relpath(target, self.out_dir)).as_posix()


def load_inputs(params: Params) -> ReportInputs:
    """Read every input; a missing file or column raises an error naming it."""
    bundle = ModelBundle.load(params.train.model_dir, "cpu")
    labels = bundle.labels
    files = EvaluateFiles(Path(params.evaluate.out_dir))
    metrics = read_json(need(files.metrics, "evaluate"))
    if tuple(metrics["labels"]) != labels:
        raise InputError(
            f"{files.metrics} has labels {metrics['labels']}, the model "
            f"has {list(labels)}: re-run `olives stage evaluate`"
        )
    if "per_volume" not in metrics:
        raise InputError(
            f"{files.metrics} has no per-volume metrics (an older evaluate stage wrote it): "
            "re-run `olives stage evaluate`"
        )
    predictions = pd.read_csv(need(files.predictions, "evaluate"))
    wanted = ["row", params.patient_column]
    wanted += [f"{n}{s}" for n in labels for s in ("", "_prob", "_pred")]
    check_columns(predictions, wanted, files.predictions)
    split_dir = Path(params.split.out_dir)
    index = read_index(split_dir)
    check_columns(index, ["split", "row", params.patient_column, *labels], split_dir)
    splits = read_json(need(split_dir / SUMMARY, "split"))
    source = recorded_source(params.data.report)
    raw_report = read_json(Path(params.data.report))
    return ReportInputs(
        params,
        Path(params.report.out_dir),
        labels,
        bundle,
        metrics,
        predictions,
        index,
        splits,
        raw_report,
        source,
        volume_ids(predictions, params.patient_column),
    )


def need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `olives {stage}` first")
    return path


def check_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")


def write_table(
    inputs: ReportInputs,
    frame: pd.DataFrame,
    name: str,
    caption: str,
    rule_before: tuple[int, ...] = (),
) -> str:
    """`tables/<name>.md` and `.tex`; returns the Markdown table."""
    folder = ReportFiles(inputs.out_dir).tables
    md = markdown_table(frame)
    (folder / f"{name}.md").write_text(md)
    tex = latex_table(frame, caption, f"tab:{name}", rule_before=rule_before)
    (folder / f"{name}.tex").write_text(tex)
    return md


def label_title(label: str) -> str:
    return f"{label} ({BIOMARKER_NAMES[label]})" if label in BIOMARKER_NAMES else label
