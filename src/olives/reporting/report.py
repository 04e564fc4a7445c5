"""The `report` stage: `reports/report.md` with figures and LaTeX tables from earlier outputs.

Nothing is recomputed that an earlier stage already wrote: metrics and intervals come from
`metrics.json`, decisions from `predictions.csv`. The only model work here is Grad-CAM on the
few gallery images, on the CPU (a handful of scans; the same figures on every machine). Each
section is one function returning Markdown (and writing its own tables/figures);
`build_report` assembles them. Outputs under `report.out_dir`: `report.md`,
`figures/report/<label>_errors.png`, `tables/*.md`, `tables/*.tex`, `tables/per_patient.csv`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from olives.config import Params
from olives.data.cache import open_cache
from olives.data.prepare import SUMMARY, clinical_features, read_index
from olives.data.schema import BIOMARKER_NAMES, BIOMARKERS
from olives.data.splits import SPLITS
from olives.errors import InputError
from olives.io import read_json, reset_dir
from olives.layout import EvaluateFiles, ReportFiles, TrainFiles
from olives.metrics import image_f1_scores
from olives.models import ModelBundle
from olives.reporting import figures
from olives.reporting.gradcam import empty_reason, grad_cam, overlay
from olives.reporting.tables import (
    fmt,
    fmt_ci,
    fmt_percent,
    latex_table,
    markdown_table,
)

WORST_PATIENTS = 10
# Published VIP Cup 2023 results on the OLIVES RECOVERY test set (see docs / shared README).
VIP_REFERENCE = {
    "vip_phase1": {"baseline": 0.6256, "best": 0.814},
    "vip_phase2": {"baseline": None, "best": 0.8527},
}
SECTION_TITLES = (
    "## 1. Data summary",
    "## 2. Main results",
    "## 3. Learning curves, ROC, PR and reliability",
    "## 4. Error analysis",
    "## 5. LaTeX tables",
)


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
    raw_report: dict[str, Any] | None

    def link(self, target: Path) -> str:
        """`target` relative to report.md, with forward slashes (Markdown links)."""
        return Path(os.path.relpath(target, self.out_dir)).as_posix()


# ---------------------------------------------------------------------------------------------
# Entry point and inputs
# ---------------------------------------------------------------------------------------------


def build_report(params: Params) -> Path:
    """Write `report.md`, its figures and tables into `params.report.out_dir`; return its path."""
    inputs = load_inputs(params)
    files = ReportFiles(inputs.out_dir)
    for folder in (files.tables, files.gallery):
        reset_dir(folder)  # no stale table/figure of a label that no longer exists
    parts = [
        header_section(inputs),
        data_section(inputs),
        results_section(inputs),
        curves_section(inputs),
        error_section(inputs),
        latex_section(inputs),
    ]
    path = files.report
    path.write_text("\n".join(p.rstrip("\n") + "\n" for p in parts))
    return path


def load_inputs(params: Params) -> ReportInputs:
    """Read every input; a missing file or column raises an error naming it."""
    bundle = ModelBundle.load(params.train.model_dir, "cpu")
    labels = bundle.labels
    files = EvaluateFiles(Path(params.evaluate.out_dir))
    metrics = read_json(_need(files.metrics, "evaluate"))
    if tuple(metrics["labels"]) != labels:
        raise InputError(
            f"{files.metrics} has labels {metrics['labels']}, the model "
            f"has {list(labels)}: re-run `olives evaluate`"
        )
    predictions = pd.read_csv(_need(files.predictions, "evaluate"))
    wanted = ["row", params.patient_column]
    wanted += [f"{n}{s}" for n in labels for s in ("", "_prob", "_pred")]
    _check_columns(predictions, wanted, files.predictions)
    split_dir = Path(params.split.out_dir)
    index = read_index(split_dir)
    _check_columns(index, ["split", "row", params.patient_column, *labels], split_dir)
    splits = read_json(_need(split_dir / SUMMARY, "split"))
    raw_path = Path(params.data.report)
    raw_report = read_json(raw_path) if raw_path.is_file() else None
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
    )


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `olives {stage}` first")
    return path


def _check_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")


def _write_table(
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


def _label_title(label: str) -> str:
    return f"{label} ({BIOMARKER_NAMES[label]})" if label in BIOMARKER_NAMES else label


# ---------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------


def header_section(inputs: ReportInputs) -> str:
    context = inputs.metrics.get("context", {})
    model = inputs.bundle.model.cfg
    lines = [
        "# OLIVES biomarker detection: report",
        "",
        "Generated by `olives report` (DVC stage `report`) from the outputs of the train and "
        "evaluate stages; do not edit by hand.",
        "",
        f"- Data source: `{inputs.params.data.source}`",
        f"- Model: `{model.backbone}`, fusion `{model.fusion}`, loss "
        f"`{context.get('loss', '?')}`, seed {context.get('seed', '?')}, "
        f"best epoch {inputs.bundle.best_epoch}",
        f"- Labels: {', '.join(f'`{n}`' for n in inputs.labels)}",
        f"- Test set: {inputs.metrics['n_images']} images, {inputs.metrics['n_patients']} patients",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 1. Data summary
# ---------------------------------------------------------------------------------------------


def data_summary_frame(
    index: pd.DataFrame, labels: tuple[str, ...], patient_column: str
) -> pd.DataFrame:
    """Per split: patients, eyes, images and label prevalence (as printed)."""
    rows = []
    for name in SPLITS:
        part = index[index["split"] == name]
        row: dict[str, Any] = {
            "Split": name,
            "Patients": part[patient_column].nunique(),
            "Eyes": _count_eyes(part, patient_column),
            "Images": len(part),
        }
        for label in labels:
            row[label] = fmt_percent(part[label].mean() if len(part) else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _count_eyes(part: pd.DataFrame, patient_column: str) -> str:
    """Distinct (patient, eye) pairs; 'n/a' when the data have no eye column."""
    if "eye" not in part.columns or part["eye"].isna().all():
        return "n/a"
    known = part.dropna(subset=["eye"])
    return str(len(known[[patient_column, "eye"]].drop_duplicates()))


def data_section(inputs: ReportInputs) -> str:
    params = inputs.params
    frame = data_summary_frame(inputs.index, inputs.labels, params.patient_column)
    table = _write_table(
        inputs, frame, "data_summary", "Patients, eyes, images and label prevalence per split."
    )
    lines = [
        SECTION_TITLES[0],
        "",
        f"Source: `{params.data.source}`. Splits are patient-level "
        "(no patient in two splits); prevalence is the fraction of images with the label.",
        "",
        table,
    ]
    lines += _split_notes(inputs)
    warnings = _raw_warnings(inputs.raw_report)
    if inputs.raw_report is None:
        lines.append("- `raw_report.json` not found: no warnings about the raw data available.")
    for warning in warnings:
        lines.append(f"- **Warning (raw data):** {warning}")
    return "\n".join(lines) + "\n"


def _split_notes(inputs: ReportInputs) -> list[str]:
    notes = []
    summary = inputs.splits.get("splits", {})
    for name in SPLITS:
        listed = summary.get(name, {}).get("n_rows")
        counted = int((inputs.index["split"] == name).sum())
        if listed is not None and listed != counted:
            notes.append(
                f"- **Warning:** `splits.json` lists {listed} {name} rows, "
                f"`index.parquet` has {counted}: the split outputs are out of date."
            )
    test = inputs.index[inputs.index["split"] == "test"]
    if "source_split" in test.columns and len(test) and (test["source_split"] == "test").all():
        notes.append("- The test split is the source's official test split.")
    for key, what in (
        (
            "excluded_duplicates_of_test",
            "training rows excluded as byte-identical copies of test images",
        ),
        ("unlabeled_rows", "unlabelled rows (not used)"),
    ):
        if inputs.splits.get(key):
            notes.append(f"- {inputs.splits[key]} {what}.")
    return notes


def _raw_warnings(raw_report: dict[str, Any] | None) -> list[str]:
    if raw_report is None:
        return []
    return [w for info in raw_report.get("splits", {}).values() for w in info.get("warnings", [])]


# ---------------------------------------------------------------------------------------------
# 2. Main results
# ---------------------------------------------------------------------------------------------


def main_results_frame(metrics: dict[str, Any], labels: tuple[str, ...]) -> pd.DataFrame:
    """One row per biomarker, then macro and micro averages; CIs as `0.912 [0.88, 0.94]`."""
    rows = []
    for label in labels:
        m = metrics["per_label"][label]
        rows.append(
            {
                "Biomarker": _label_title(label),
                "Prevalence": f"{fmt_percent(m['prevalence'])} ({m['n_pos']})",
                **_ci_cells(m),
                "Sensitivity": fmt(m["sensitivity"]),
                "Specificity": fmt(m["specificity"]),
                "Threshold": fmt(m["threshold"]),
            }
        )
    for avg in ("macro", "micro"):
        rows.append(
            {
                "Biomarker": f"{avg.capitalize()} average",
                "Prevalence": "",
                **_ci_cells(metrics[avg]),
                "Sensitivity": "",
                "Specificity": "",
                "Threshold": "",
            }
        )
    return pd.DataFrame(rows)


def _ci_cells(m: dict[str, Any]) -> dict[str, str]:
    return {
        "AUROC": fmt_ci(m["auroc"], m.get("auroc_ci")),
        "AP": fmt_ci(m["average_precision"], m.get("average_precision_ci")),
        "F1": fmt_ci(m["f1"], m.get("f1_ci")),
    }


def vip_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """This run's VIP Cup scores beside the published ones."""
    names = {
        "vip_phase1": "VIP phase 1 (macro-F1, images pooled)",
        "vip_phase2": "VIP phase 2 (per-image macro-F1, per patient)",
    }
    rows = []
    for key, name in names.items():
        ref = VIP_REFERENCE[key]
        rows.append(
            {
                "Score": name,
                "This run": fmt_ci(metrics.get(key), metrics.get(f"{key}_ci")),
                "Official baseline (ResNet-50)": fmt(ref["baseline"], 4),
                "Best team": fmt(ref["best"], 4),
            }
        )
    return pd.DataFrame(rows)


def comparability_note(source: str, labels: tuple[str, ...]) -> str:
    """Whether the published OLIVES/RECOVERY figures can be set beside this run's."""
    if source == "huggingface" and labels == BIOMARKERS:
        return (
            "The reference figures are VIP Cup 2023 results on the OLIVES RECOVERY test set "
            "(the hub's `test` split, used here as the test split); they compare with this "
            "run only approximately (thresholds, model selection and submission rules differ)."
        )
    why = f"this run used `data.source: {source}`"
    if labels != BIOMARKERS:
        why += f" and the labels {', '.join(labels)} instead of B1..B6"
    return (
        f"**Not comparable: {why}. The reference figures are OLIVES/RECOVERY results of the "
        "VIP Cup 2023 and are given only as context.**"
    )


def results_section(inputs: ReportInputs) -> str:
    metrics, boot = inputs.metrics, inputs.metrics.get("bootstrap", {})
    main = _write_table(
        inputs,
        main_results_frame(metrics, inputs.labels),
        "main_results",
        "Test-set results per biomarker: AUROC, average precision (AP) and F1 at "
        "the validation-tuned threshold, with patient-bootstrap 95% intervals.",
        rule_before=(len(inputs.labels),),
    )
    vip = _write_table(
        inputs,
        vip_frame(metrics),
        "vip_scores",
        "VIP Cup 2023 scores of this run and published OLIVES/RECOVERY figures.",
    )
    ci = round(100 * boot.get("ci", inputs.params.evaluate.ci))
    lines = [
        SECTION_TITLES[1],
        "",
        f"Test split; F1, sensitivity and specificity at the threshold tuned on validation. "
        f"Brackets: {ci}% percentile intervals from {boot.get('n_resamples', '?')} "
        f"{boot.get('unit', 'patient')}-level bootstrap resamples. Prevalence: test "
        "fraction (positives).",
        "",
        main,
    ]
    notes = [
        f"- {_label_title(n)}: {metrics['per_label'][n]['note']}"
        for n in inputs.labels
        if metrics["per_label"][n].get("note")
    ]
    lines += ["Undefined values (n/a):", *notes, ""] if notes else []
    lines += calibration_lines(inputs)
    lines += [
        "### VIP Cup 2023 scores and published reference figures",
        "",
        vip,
        comparability_note(inputs.params.data.source, inputs.labels),
        "",
    ]
    test_warning = (inputs.raw_report or {}).get("splits", {}).get("test", {}).get("warnings")
    if test_warning:
        lines.append(
            "Phase 2 and the patient bootstrap need real patient IDs; see the raw-data "
            "warning in section 1."
        )
    return "\n".join(lines) + "\n"


def calibration_frame(calibration: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per biomarker: temperature, ECE and Brier score before and after calibration."""
    rows = [
        {
            "Biomarker": _label_title(label),
            "Temperature": fmt(c["temperature"], 2),
            "ECE before": fmt(c["ece_raw"]),
            "ECE after": fmt(c["ece"]),
            "Brier before": fmt(c["brier_raw"]),
            "Brier after": fmt(c["brier"]),
        }
        for label, c in calibration.items()
    ]
    return pd.DataFrame(rows)


def calibration_lines(inputs: ReportInputs) -> list[str]:
    calibration = inputs.metrics.get("calibration")
    if not calibration:
        return []
    table = _write_table(
        inputs,
        calibration_frame(calibration),
        "calibration",
        "Calibration on the test split: per-biomarker temperature (fitted on validation), "
        "expected calibration error (ECE, 10 equal-width bins) and Brier score before and after.",
    )
    return [
        "### Calibration",
        "",
        "Probabilities are calibrated per biomarker by temperature scaling fitted on the "
        "validation split (logit / T); thresholds are tuned on the calibrated validation "
        "probabilities. Scaling is monotonic: AUROC and AP do not change, the probabilities do.",
        "",
        table,
    ]


# ---------------------------------------------------------------------------------------------
# 3. Curves
# ---------------------------------------------------------------------------------------------


def curves_section(inputs: ReportInputs) -> str:
    train = TrainFiles(Path(inputs.params.train.report_dir))
    evaluated = EvaluateFiles(Path(inputs.params.evaluate.out_dir))
    lines = [SECTION_TITLES[2], ""]
    if train.metrics.is_file():
        m = read_json(train.metrics)
        lines += [
            f"Training ran {m.get('epochs_run', '?')} epochs; the best epoch "
            f"({m.get('best_epoch', '?')}) had validation macro AUROC "
            f"{fmt(m.get('val_macro_auroc'))} and macro F1@0.5 "
            f"{fmt(m.get('val_macro_f1'))}.",
            "",
        ]
    for title, path in (
        ("Learning curves", train.learning_curves),
        ("ROC per biomarker", evaluated.figure("roc")),
        ("Precision-recall per biomarker", evaluated.figure("pr")),
        (
            "Reliability diagram per biomarker (10 equal-width bins)",
            evaluated.figure("reliability"),
        ),
    ):
        lines += [f"### {title}", ""]
        lines.append(
            f"![{title}]({inputs.link(path)})" if path.is_file() else f"_Not found: `{path}`._"
        )
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 4. Error analysis
# ---------------------------------------------------------------------------------------------


def worst_cases(predictions: pd.DataFrame, label: str, size: int) -> dict[str, pd.DataFrame]:
    """Highest-scored negatives and lowest-scored positives (ties: lower cache row first)."""
    ordered = predictions.sort_values("row", kind="stable")
    negatives = ordered[ordered[label] == 0]
    positives = ordered[ordered[label] == 1]
    return {
        "fp": negatives.sort_values(f"{label}_prob", ascending=False, kind="stable").head(size),
        "fn": positives.sort_values(f"{label}_prob", ascending=True, kind="stable").head(size),
    }


def gallery_figure(
    inputs: ReportInputs,
    model: torch.nn.Module,
    images: np.ndarray,
    label: str,
    cases: dict[str, pd.DataFrame],
) -> Path:
    """One PNG per biomarker: worst FP row, worst FN row, Grad-CAM overlays when possible."""
    j = inputs.labels.index(label)
    rows: dict[str, list[tuple[np.ndarray, str]]] = {}
    kinds = {"fp": "highest-scored negatives", "fn": "lowest-scored positives"}
    for kind, title in kinds.items():
        table = cases[kind]
        pixels = images[table["row"].to_numpy()] if len(table) else np.zeros((0, 1, 1))
        cams = _cams(inputs, model, pixels, table, j)
        panels = []
        for k, rec in enumerate(table.to_dict("records")):
            wrong = rec[f"{label}_pred"] != rec[label]
            tag = ("FP" if kind == "fp" else "FN") if wrong else ("TN" if kind == "fp" else "TP")
            patient = rec[inputs.params.patient_column]
            caption = f"{tag} p={rec[f'{label}_prob']:.3f}\npatient {patient}"
            if cams is not None and empty_reason(cams[k]):
                caption += "\nGrad-CAM empty: no region supports a positive"
            panels.append((overlay(pixels[k], None if cams is None else cams[k]), caption))
        rows[title] = panels
    cam_note = "Grad-CAM overlay" if model.backbone is not None else "no Grad-CAM (clinical model)"
    path = ReportFiles(inputs.out_dir).gallery / f"{_safe(label)}_errors.png"
    return figures.image_gallery(
        rows, inputs.params.report.gallery_size, f"{_label_title(label)}: {cam_note}", path
    )


def _cams(
    inputs: ReportInputs, model: torch.nn.Module, pixels: np.ndarray, table: pd.DataFrame, j: int
) -> np.ndarray | None:
    if model.backbone is None or not len(table):
        return None
    frame = inputs.index.set_index("row").loc[table["row"].to_numpy()]
    clinical = torch.from_numpy(clinical_features(frame, inputs.bundle.clinical))
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div(255.0).unsqueeze(1)
    return grad_cam(model, x, clinical, j)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _case_lines(inputs: ReportInputs, label: str, cases: dict[str, pd.DataFrame]) -> list[str]:
    threshold = inputs.metrics["per_label"][label]["threshold"]
    shown = pd.concat(
        [
            cases["fp"].assign(kind="negative, highest p"),
            cases["fn"].assign(kind="positive, lowest p"),
        ]
    )
    frame = pd.DataFrame(
        {
            "Kind": shown["kind"],
            "Patient": shown[inputs.params.patient_column].astype(str),
            "Image": shown["path"].astype(str) if "path" in shown else shown["row"].astype(str),
            "Probability": shown[f"{label}_prob"].map(fmt),
            "Error at threshold": np.where(shown[f"{label}_pred"] != shown[label], "yes", "no"),
        }
    )
    return [f"Threshold {fmt(threshold)}.", "", markdown_table(frame) if len(frame) else ""]


def per_patient_frame(
    predictions: pd.DataFrame, labels: tuple[str, ...], patient_column: str
) -> pd.DataFrame:
    """Per patient: images, mean per-image macro-F1 (VIP phase-2 style), per-label accuracy;
    worst first (ties: patient id)."""
    truth = predictions[list(labels)].to_numpy()
    decided = predictions[[f"{n}_pred" for n in labels]].to_numpy()
    table = pd.DataFrame(
        {
            "patient": predictions[patient_column].to_numpy(),
            "image_macro_f1": image_f1_scores(truth, decided),
        }
    )
    for j, name in enumerate(labels):
        table[f"{name}_accuracy"] = (truth[:, j] == decided[:, j]).astype(float)
    grouped = table.groupby("patient", sort=True)
    out = grouped.mean()
    out.insert(0, "images", grouped.size())
    out = out.reset_index().sort_values(["image_macro_f1", "patient"], kind="stable")
    return out.reset_index(drop=True)


def per_patient_lines(inputs: ReportInputs) -> list[str]:
    table = per_patient_frame(inputs.predictions, inputs.labels, inputs.params.patient_column)
    table.round(6).to_csv(ReportFiles(inputs.out_dir).tables / "per_patient.csv", index=False)
    worst = table.head(WORST_PATIENTS)
    shown = pd.DataFrame(
        {
            "Patient": worst["patient"].astype(str),
            "Images": worst["images"],
            "Per-image macro-F1": worst["image_macro_f1"].map(fmt),
        }
    )
    for name in inputs.labels:
        shown[f"{name} acc."] = worst[f"{name}_accuracy"].map(fmt)
    md = _write_table(
        inputs,
        shown,
        "per_patient_worst",
        f"The {len(worst)} test patients with the lowest mean per-image macro-F1.",
    )
    mean = float(table["image_macro_f1"].mean())
    lines = [
        "### Performance per patient",
        "",
        f"{len(table)} test patients, worst {len(worst)} shown (full table: "
        f"[`tables/per_patient.csv`](tables/per_patient.csv)). Per-image macro-F1 is the VIP "
        "phase-2 image score; accuracy is per label over the patient's images. Mean over "
        f"patients: {fmt(mean)} (VIP phase 2 in metrics.json: "
        f"{fmt(inputs.metrics.get('vip_phase2'))}).",
        "",
        md,
    ]
    if len(table) == 1:
        lines.append(
            "**Only one patient ID in the test split: per-patient figures are not meaningful.**"
        )
    return lines


def error_section(inputs: ReportInputs) -> str:
    size = inputs.params.report.gallery_size
    model = inputs.bundle.model
    images, _ = open_cache(Path(inputs.params.preprocess.cache_dir))
    lines = [
        SECTION_TITLES[3],
        "",
        f"Per biomarker, the {size} negatives with the highest probability (worst false "
        f"positives) and the {size} positives with the lowest (worst false negatives); "
        "captions say whether each is an error at the tuned threshold.",
    ]
    if model.backbone is None:
        lines.append(
            "The model uses only clinical values (`fusion: clinical`): no image "
            "feeds the prediction, so there is no Grad-CAM; images are shown plain."
        )
    else:
        lines.append(
            "Overlays: Grad-CAM of that biomarker's logit (pytorch-grad-cam) on the "
            "backbone's last feature stage, or the last block's input for ViT-family "
            "backbones (red = strongest support for a positive)."
        )
    lines.append("")
    for label in inputs.labels:
        cases = worst_cases(inputs.predictions, label, size)
        path = gallery_figure(inputs, model, images, label, cases)
        lines += [f"### {_label_title(label)}", "", f"![{label} errors]({inputs.link(path)})", ""]
        lines += _case_lines(inputs, label, cases)
    lines += per_patient_lines(inputs)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 5. LaTeX
# ---------------------------------------------------------------------------------------------


def latex_section(inputs: ReportInputs) -> str:
    files = sorted(ReportFiles(inputs.out_dir).tables.glob("*.tex"))
    lines = [
        SECTION_TITLES[4],
        "",
        "Booktabs tables (`\\usepackage{booktabs}`), ready to `\\input` into a paper:",
        "",
    ]
    lines += [
        f"- [`{inputs.link(f)}`]({inputs.link(f)}): `\\input{{{inputs.link(f)}}}`" for f in files
    ]
    return "\n".join(lines) + "\n"
