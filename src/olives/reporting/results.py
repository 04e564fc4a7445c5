"""The report's result sections: per B-scan, per volume, and beside published figures.

AUROC / AP / F1 and their intervals, per scan and per volume (`per_volume`), are read from
`metrics.json`; what the evaluate stage does not write (confusion counts, PPV / NPV, per-visit
and per-eye tables) is computed here from `predictions.csv` with the evaluate stage's bootstrap
settings (same resamples, same seed) and the volume rule of `olives.data.volumes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score

from olives.config import BIOMARKERS
from olives.data.volumes import aggregate_volumes, eye_name
from olives.errors import InputError
from olives.reporting.groups import arrays, group_scores
from olives.reporting.inputs import ReportInputs, label_title, write_table
from olives.reporting.operating import (
    RATE_FLOOR,
    RATES,
    Bootstrap,
    below_floor,
    caveats,
    operating_points,
)
from olives.reporting.tables import OUTSIDE, fmt, fmt_ci, fmt_percent, markdown_table

SCAN_TITLE = "## 2. Results per B-scan"
VOLUME_TITLE = "## 3. Results per volume"
COMPARED_TITLE = "## 6. Compared with published results"
WORST_EYES = 10
# Published figures on OLIVES (facts: ../shared/olives-reference/README.md). Data: the VIP Cup
# 2023 test set is RECOVERY (the hub's `test` split: 3,871 labelled images, 40 subjects).
RECOVERY = "OLIVES RECOVERY test set (VIP Cup 2023)"
PUBLISHED = (
    ("VIP Cup 2023 official baseline (ResNet-50)", "vip_phase1", 0.6256),
    ("VIP Cup 2023 best team (MaxViT + EVA-02 ensemble, 5-fold CV)", "vip_phase1", 0.814),
    ("VIP Cup 2023 phase 2, 1st", "vip_phase2", 0.8527),
    ("VIP Cup 2023 phase 2, 2nd", "vip_phase2", 0.8215),
    ("VIP Cup 2023 phase 2, 3rd", "vip_phase2", 0.8116),
)
SCORES = {
    "vip_phase1": "macro-F1 over B1-B6, images pooled (phase 1)",
    "vip_phase2": "per-image macro-F1 averaged per patient, then over patients (phase 2)",
}


def bootstrap_of(metrics: dict[str, Any]) -> Bootstrap:
    boot = metrics.get("bootstrap", {})
    return Bootstrap(
        int(boot.get("n_resamples", 0)), float(boot.get("ci", 0.95)), boot.get("seed", 0)
    )


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def main_results_frame(metrics: dict[str, Any], labels: tuple[str, ...]) -> pd.DataFrame:
    """One row per biomarker, then macro and micro averages: AUROC, AP, F1 with intervals."""
    rows = []
    for label in labels:
        m = metrics["per_label"][label]
        rows.append(
            {
                "Biomarker": label_title(label),
                "Prevalence": f"{fmt_percent(m['prevalence'])} ({m['n_pos']})",
                **_ci_cells(m),
                "Threshold": fmt(m["threshold"]),
            }
        )
    for avg in ("macro", "micro"):
        cells = _ci_cells(metrics[avg])
        rows.append({"Biomarker": f"{avg.capitalize()} average", "Prevalence": "", **cells})
        rows[-1]["Threshold"] = ""
    return pd.DataFrame(rows)


def _ci_cells(m: dict[str, Any]) -> dict[str, str]:
    return {
        "AUROC": fmt_ci(m["auroc"], m.get("auroc_ci")),
        "AP": fmt_ci(m["average_precision"], m.get("average_precision_ci")),
        "F1": fmt_ci(m["f1"], m.get("f1_ci")),
    }


def operating_frame(points: dict[str, dict[str, Any]], labels: tuple[str, ...]) -> pd.DataFrame:
    """Per biomarker: TP / FP / FN / TN and the four rates with intervals."""
    rows = []
    for label in labels:
        p = points[label]
        row: dict[str, Any] = {"Biomarker": label_title(label)}
        row |= {k.upper(): p[k] for k in ("tp", "fp", "fn", "tn")}
        names = {"sensitivity": "Sensitivity", "specificity": "Specificity"}
        for rate in RATES:
            row[names.get(rate, rate.upper())] = fmt_ci(p[rate], p.get(f"{rate}_ci"))
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_frame(calibration: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per biomarker: temperature, ECE and Brier score before and after calibration."""
    rows = [
        {
            "Biomarker": label_title(label),
            "Temperature": fmt(c["temperature"], 2),
            "ECE before": fmt(c["ece_raw"]),
            "ECE after": fmt(c["ece"]),
            "Brier before": fmt(c["brier_raw"]),
            "Brier after": fmt(c["brier"]),
        }
        for label, c in calibration.items()
    ]
    return pd.DataFrame(rows)


def visit_frame(volumes: pd.DataFrame, labels: tuple[str, ...], patient: str) -> pd.DataFrame:
    """Per visit order (1 = each eye's first visit): volumes, patients, macro AUROC over the
    labels with both classes, macro F1 at the tuned thresholds."""
    truth, prob, pred = arrays(volumes, labels)
    rows = []
    for order, part in volumes.groupby("visit_order", sort=True):
        rows_of = part.index.to_numpy()
        t, p, d = truth[rows_of], prob[rows_of], pred[rows_of]
        both = [j for j in range(len(labels)) if 0 < t[:, j].sum() < len(t)]
        auroc = np.mean([roc_auc_score(t[:, j], p[:, j]) for j in both]) if both else None
        f1 = f1_score(t, d, average="macro", zero_division=0)
        rows.append(
            {
                "Visit": f"{order} (first)" if order == 1 else str(order),
                "Volumes": len(part),
                "Patients": part[patient].nunique(),
                "Macro AUROC": fmt(auroc),
                "Macro F1": fmt(f1),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _interval_note(inputs: ReportInputs) -> str:
    boot = inputs.metrics.get("bootstrap", {})
    return (
        f"Brackets: {round(100 * boot.get('ci', inputs.params.evaluate.ci))}% percentile "
        f"intervals from {boot.get('n_resamples', '?')} patient-level bootstrap resamples; "
        f"{OUTSIDE} marks a point outside its interval (a skewed resampling distribution)."
    )


def caveat_lines(
    frame: pd.DataFrame,
    inputs: ReportInputs,
    bootstrap: dict[str, Any],
    unit: str = "scans",
) -> list[str]:
    """A visible warning per biomarker whose figures rest on few patients or dropped resamples."""
    found = caveats(frame, inputs.labels, inputs.params.patient_column, bootstrap, unit=unit)
    lines = [f"- **Caution, {label_title(k)}:** {'; '.join(v)}." for k, v in found.items() if v]
    return [*lines, ""] if lines else []


def floor_note(unit: str) -> str:
    """What the cautions after an operating-point table mean (the floor, stated once)."""
    return (
        f"A caution follows the table for each biomarker whose sensitivity or specificity "
        f"here is below {RATE_FLOOR:.2f}: fewer than half of its positive (negative) {unit} "
        "are called so at the threshold tuned on validation."
    )


def floor_lines(points: dict[str, dict[str, Any]], labels: tuple[str, ...], unit: str) -> list[str]:
    """One caution per biomarker whose decisions at the tuned threshold fail on test."""
    lines = [
        f"- **Caution, {label_title(k)}:** {why}: the threshold tuned on validation does not "
        "transfer to this test set."
        for k, why in below_floor(points, labels, unit).items()
    ]
    return [*lines, ""] if lines else []


def scan_section(inputs: ReportInputs) -> str:
    metrics = inputs.metrics
    main = write_table(
        inputs,
        main_results_frame(metrics, inputs.labels),
        "main_results",
        "Test-set results per biomarker: AUROC, average precision (AP) and F1 at "
        "the validation-tuned threshold, with patient-bootstrap 95% intervals.",
        rule_before=(len(inputs.labels),),
    )
    points = operating_points(
        inputs.predictions, inputs.labels, inputs.params.patient_column, bootstrap_of(metrics)
    )
    operating = write_table(
        inputs,
        operating_frame(points, inputs.labels),
        "operating_point",
        "Test-set confusion counts at the validation-tuned threshold, with sensitivity, "
        "specificity, PPV and NPV and their patient-bootstrap 95% intervals.",
    )
    lines = [
        SCAN_TITLE,
        "",
        "Test split, one row per B-scan. F1 at the threshold tuned on validation. "
        f"{_interval_note(inputs)} Prevalence: test fraction (positives).",
        "",
        main,
    ]
    notes = [
        f"- {label_title(n)}: {metrics['per_label'][n]['note']}"
        for n in inputs.labels
        if metrics["per_label"][n].get("note")
    ]
    lines += ["Undefined values (n/a):", *notes, ""] if notes else []
    lines += caveat_lines(inputs.predictions, inputs, metrics.get("bootstrap", {}))
    lines += [
        "### At the tuned threshold",
        "",
        "Counts of B-scans (TP, FP, FN, TN) as scikit-learn's confusion matrix gives them; PPV "
        "and NPV depend on this test set's prevalence. " + floor_note("scans"),
        "",
        operating,
        *floor_lines(points, inputs.labels, "scan"),
        *calibration_lines(inputs),
    ]
    return "\n".join(lines) + "\n"


def calibration_lines(inputs: ReportInputs) -> list[str]:
    calibration = inputs.metrics.get("calibration")
    if not calibration:
        return ["No calibration in this model: its probabilities are the network's sigmoid."]
    table = write_table(
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
        "probabilities. Scaling is monotonic: AUROC and AP do not change, the probabilities do. "
        "ECE: expected calibration error over 10 equal-width bins (0 = calibrated).",
        "",
        table,
    ]


def volume_table_of(inputs: ReportInputs) -> pd.DataFrame | str:
    """The test volumes of `predictions.csv`, or why there are none; checked against the
    `per_volume` block the evaluate stage wrote (same rule, same predictions)."""
    block = inputs.metrics["per_volume"]
    if "unavailable" in block:
        return block["unavailable"]
    if isinstance(inputs.volumes, str):
        counted = f"none ({inputs.volumes})"
    else:
        volumes = aggregate_volumes(
            inputs.predictions, inputs.labels, inputs.params.patient_column, inputs.volumes
        )
        if len(volumes) == block["n_volumes"]:
            return volumes
        counted = str(len(volumes))
    raise InputError(
        f"metrics.json counts {block['n_volumes']} test volumes, predictions.csv {counted}: "
        "re-run `olives stage evaluate`"
    )


def volume_section(inputs: ReportInputs) -> str:
    lines = [VOLUME_TITLE, ""]
    volumes = volume_table_of(inputs)
    if isinstance(volumes, str):
        lines.append(f"Not available: this source has no volume ids ({volumes}).")
        return "\n".join(lines) + "\n"
    patient = inputs.params.patient_column
    metrics = inputs.metrics["per_volume"]
    points = operating_points(volumes, inputs.labels, patient, bootstrap_of(inputs.metrics))
    scans = volumes["scans"]
    sizes = f"{scans.min()}" if scans.min() == scans.max() else f"{scans.min()}-{scans.max()}"
    lines += [
        f"{len(volumes)} test volumes (patient x eye x visit) of {sizes} B-scans, from "
        f"{volumes[patient].nunique()} patients. "
        "A volume is positive for a biomarker when any of its B-scans is labelled positive; its "
        "probability is its highest B-scan probability, and it is called positive when that "
        "reaches the tuned threshold (when any B-scan is called positive). Volumes are the "
        "folders of the image paths. " + _interval_note(inputs),
        "",
        write_table(
            inputs,
            main_results_frame(metrics, inputs.labels),
            "volume_results",
            "Test-set results per volume (any B-scan positive), with patient-bootstrap intervals.",
            rule_before=(len(inputs.labels),),
        ),
        *caveat_lines(volumes, inputs, metrics["bootstrap"], unit="volumes"),
        "### Volumes at the tuned threshold",
        "",
        floor_note("volumes"),
        "",
        write_table(
            inputs,
            operating_frame(points, inputs.labels),
            "volume_operating_point",
            "Test-set confusion counts of volumes at the tuned threshold, with rates.",
        ),
        *floor_lines(points, inputs.labels, "volume"),
        "### Per visit and per eye",
        "",
        "Visit 1 is each eye's first visit in the test data (visits ordered by the number in "
        "their folder name, `V1` < `V14`). Macro AUROC averages the labels with both classes.",
        "",
        write_table(
            inputs,
            visit_frame(volumes, inputs.labels, patient),
            "per_visit",
            "Volume-level results per visit (1 = each eye's first visit).",
        ),
        *_eye_lines(inputs, volumes),
    ]
    return "\n".join(lines) + "\n"


def _eye_lines(inputs: ReportInputs, volumes: pd.DataFrame) -> list[str]:
    patient = inputs.params.patient_column
    eyes = [eye_name(e, v) for e, v in zip(volumes["eye"], volumes["volume"], strict=True)]
    keyed = volumes.assign(
        eye_key=volumes[patient].astype(str) + " / " + pd.Series(eyes, volumes.index)
    )
    table = group_scores(keyed, inputs.labels, "eye_key").rename(columns={"group": "eye"})
    path = Path(inputs.out_dir) / "tables" / "per_eye.csv"
    table.round(6).to_csv(path, index=False)
    worst = table.head(WORST_EYES)
    shown = pd.DataFrame(
        {
            "Patient / eye": worst["eye"],
            "Volumes": worst["count"],
            "Per-volume macro-F1": worst["macro_f1"].map(fmt),
        }
    )
    for name in inputs.labels:
        shown[f"{name} acc."] = worst[f"{name}_accuracy"].map(fmt)
    return [
        f"{len(table)} eyes (OD / OS where the data or the image paths say which, else the "
        f"eye id); the {len(worst)} with the lowest mean per-volume macro-F1 (full "
        f"table: [`tables/per_eye.csv`]({inputs.link(path)})):",
        "",
        markdown_table(shown),
    ]


def compared_section(inputs: ReportInputs) -> str:
    """Published OLIVES figures beside this run's, each labelled with its data."""
    source, labels = inputs.source, inputs.labels
    comparable = source == "huggingface" and labels == BIOMARKERS
    verdict = "approximately" if comparable else "no"
    rows = [
        {
            "Published result": name,
            "Data": RECOVERY,
            "Score": SCORES[key],
            "Published": fmt(value, 4),
            "This run": fmt_ci(inputs.metrics.get(key), inputs.metrics.get(f"{key}_ci")),
            "Comparable": verdict,
        }
        for name, key, value in PUBLISHED
    ]
    table = write_table(
        inputs,
        pd.DataFrame(rows),
        "compared_with",
        "Published OLIVES/RECOVERY results (VIP Cup 2023) beside this run's scores.",
    )
    if comparable:
        why = (
            "This run's test split is the hub's `test` split (RECOVERY), so the scores compare "
            "approximately: thresholds, model selection and submission rules differ."
        )
    else:
        why = f"**Not comparable: this run used `data.source: {source}`"
        why += "" if labels == BIOMARKERS else f" and the labels {', '.join(labels)}"
        why += ". The published figures are given as context only.**"
    paper = Path(inputs.params.paper.out_dir) / "ablation.md"
    return (
        "\n".join(
            [
                COMPARED_TITLE,
                "",
                table,
                why,
                "",
                "The OLIVES paper (Prabhushankar et al., NeurIPS 2022) and its code trained a "
                "ResNet-18 at 224 px with clinically supervised contrastive pre-training on "
                "BCVA/CST and linear evaluation (25 epochs, batch 64, lr 1e-3) on its own patient "
                "splits of the TREX DME and PRIME scans, not on RECOVERY; its figures are not "
                "quoted here, as the project's reference facts hold none comparable to this run.",
                "",
                "### Model variants",
                "",
                f"The ablation grid (`make paper`: fusion x loss x seeds, on this data) writes its "
                f"table to [`{inputs.link(paper)}`]({inputs.link(paper)}), with mean ± std over "
                "seeds; rerun `make paper` after changing the data or the model.",
            ]
        )
        + "\n"
    )
