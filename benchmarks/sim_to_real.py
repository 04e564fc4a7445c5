"""Sim-to-real yardstick: how a model trained on synthetic OCT separates real OCT classes.

On the real Kermany OCT2017 sample (`../shared/kermany-oct-sample`: 160 Spectralis B-scans,
CNV / DME / DRUSEN / NORMAL, with patient ids) the clinical answer is known per class: DME scans
carry intraretinal fluid (B6) and macular thickening (B5), NORMAL scans neither; CNV scans often
carry fluid; DRUSEN scans carry no intraretinal fluid (so DRUSEN vs NORMAL by B6 should sit near
0.5: a check, not a goal); hyperreflective foci (B1) are common in DME and rare in a normal
retina. Each scan's six probabilities come from the model exactly as `olives predict` computes
them (`olives.serving`: the ImageFolder reader with its path rule, the training preprocessing,
the model's temperatures). Kermany scans have no BCVA/CST: the predictor imputes the model's
training median and sets the missing flag, as `olives predict` does for any scan without them.
AUROCs carry patient-level bootstrap intervals (`olives.evaluation.intervals`: patients are
resampled, not scans). The one real OLIVES B-scan's probabilities are printed too; its
biomarker labels are not published with it.

A benchmark to run, never a test the generator is fitted to.

    python benchmarks/sim_to_real.py [--model models] [--train-preset tiny|default]
        [--shared ../shared] [--bootstrap 2000] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
KERMANY = "kermany-oct-sample"
OLIVES_SCAN = "olives-reference/images/olives_bscan_504x496.tif"
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
PATIENT = "Patient_ID"
CI = 0.95
# `evaluate` too: the synthetic test AUROC belongs beside the real one (issue 29's acceptance)
TRAIN_STAGES = ("check", "download", "preprocess", "split", "pretrain", "train", "evaluate")


@dataclass(frozen=True)
class Comparison:
    """Scans of class `positive` against scans of class `negative`, ranked by each biomarker's
    probability; `macro` adds the mean of the biomarkers' AUROCs (bootstrapped with them)."""

    positive: str
    negative: str
    biomarkers: tuple[str, ...]
    note: str
    macro: bool = False

    @property
    def name(self) -> str:
        return f"{self.positive} vs {self.negative}"


COMPARISONS = (
    Comparison("DME", "NORMAL", ("B6", "B5"), "DME: intraretinal fluid and thickening", True),
    Comparison("CNV", "NORMAL", ("B6",), "CNV: often fluid"),
    Comparison("DRUSEN", "NORMAL", ("B6",), "check: no IRF either side, expect ~0.5"),
    Comparison("DME", "NORMAL", ("B1",), "HRF common in DME, rare in a normal retina"),
)


# ---------------------------------------------------------------------------------------------
# The real scans and their classes
# ---------------------------------------------------------------------------------------------


def scan_classes(metadata: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Per metadata row: `patient`, `cls` (one of CLASSES) and `problem` (None when usable).
    A row without a patient or without exactly one class column at 1 is a problem row."""
    missing = [c for c in (PATIENT, *CLASSES) if c not in table.columns]
    if missing:
        raise SystemExit(f"{metadata}: no column {', '.join(map(repr, missing))}")
    flags = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce")
    binary = flags.isin([0, 1]).all(axis=1) & (flags.sum(axis=1) == 1)
    patient = table[PATIENT].astype("string").str.strip()
    out = pd.DataFrame({"patient": patient, "cls": flags.idxmax(axis=1).where(binary)})
    out["problem"] = [
        _row_problem(f"{metadata} line {i + 2}", patient, ok)
        for i, (patient, ok) in enumerate(zip(out["patient"], binary, strict=True))
    ]
    return out


def _row_problem(line: str, patient: Any, one_class: bool) -> str | None:
    if pd.isna(patient) or not patient:
        return f"{line}: column {PATIENT} is empty"
    if not one_class:
        return f"{line}: the class columns {', '.join(CLASSES)} are not one 1 and three 0"
    return None


def predict_folder(predictor: Any, root: Path) -> pd.DataFrame:
    """Every `metadata.csv` row of the ImageFolder `root` predicted as `olives predict` reads
    it (`imagefolder_scans`: a `file_name` leaving `root` is an error row), joined to its class;
    `problem` says why a row is left out (its scan's error or its class)."""
    from olives.serving.scans import imagefolder_scans

    metadata = root / "metadata.csv"
    try:
        table = pd.read_csv(metadata, dtype={"file_name": str})  # the reader's own call
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read {metadata}: {exc}") from None
    scans = list(imagefolder_scans(root, metadata, predictor.bundle.clinical, predictor.limits))
    if len(scans) != len(table):
        raise SystemExit(f"{metadata}: {len(table)} rows but {len(scans)} scans read")
    predicted = predictor.predict(scans)
    classes = scan_classes(metadata, table)
    classes["problem"] = [
        error if isinstance(error, str) else problem
        for error, problem in zip(predicted["error"], classes["problem"], strict=True)
    ]
    probs = predicted[[f"{b}_prob" for b in predictor.bundle.labels]]
    imputed = predicted.filter(like="_imputed")
    return pd.concat([classes, probs, imputed], axis=1)


# ---------------------------------------------------------------------------------------------
# AUROC with a patient bootstrap
# ---------------------------------------------------------------------------------------------


def comparison_rows(frame: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """The usable rows of the two classes, with `y` = 1 for the positive class."""
    usable = frame[frame["problem"].isna()]
    rows = usable[usable["cls"].isin([comparison.positive, comparison.negative])]
    return rows.assign(y=(rows["cls"] == comparison.positive).astype(float))


def auroc_intervals(
    y: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    names: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """AUROC of each score column separating `y`, and their mean (`macro`), each with a
    patient-bootstrap percentile interval; all from the same patient draws."""
    from sklearn.metrics import roc_auc_score

    from olives.evaluation.intervals import bootstrap_metrics, percentile_interval

    y = np.asarray(y, dtype=float)
    scores = np.asarray(scores, dtype=float).reshape(len(y), -1)
    targets = np.repeat(y[:, None], scores.shape[1], axis=1)
    thresholds = np.full(scores.shape[1], 0.5)  # unused by the AUROC
    boot = bootstrap_metrics(targets, scores, thresholds, patients, names, n_boot, seed)
    points = [float(roc_auc_score(y, scores[:, j])) for j in range(scores.shape[1])]
    out = {}
    for key, point in [*zip(names, points, strict=True), ("macro", float(np.mean(points)))]:
        interval = percentile_interval(boot[f"{key}.auroc"], CI)
        out[key] = {
            "auroc": point,
            "ci": [interval.low, interval.high],
            "resamples_used": interval.n_used,
        }
    return out


def run_comparison(
    frame: pd.DataFrame, comparison: Comparison, labels: Sequence[str], n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """One result row per biomarker of `comparison` (and its macro), or one row saying why not."""
    rows = comparison_rows(frame, comparison)
    counts = {
        "scans": [int((rows["y"] == v).sum()) for v in (1, 0)],
        "patients": [int(rows.loc[rows["y"] == v, "patient"].nunique()) for v in (1, 0)],
    }
    base = {"comparison": comparison.name, "note": comparison.note, **counts}
    absent = [b for b in comparison.biomarkers if b not in labels]
    if absent or min(counts["scans"]) == 0:
        why = f"model has no {', '.join(absent)}" if absent else "a class has no usable scan"
        return [{**base, "biomarker": "+".join(comparison.biomarkers), "skipped": why}]
    names = list(comparison.biomarkers)
    scores = rows[[f"{b}_prob" for b in names]].to_numpy()
    patients = rows["patient"].to_numpy()
    result = auroc_intervals(rows["y"].to_numpy(), scores, patients, names, n_boot, seed)
    keys = names + ["macro"] * (comparison.macro and len(names) > 1)
    return [
        {**base, "biomarker": "macro(" + "+".join(names) + ")" if k == "macro" else k, **result[k]}
        for k in keys
    ]


# ---------------------------------------------------------------------------------------------
# The model: a given file, or one trained on a synthetic preset
# ---------------------------------------------------------------------------------------------


def train_on_preset(preset: str, work: Path) -> tuple[Path, float | None]:
    """The main pipeline's stages `check` .. `evaluate` on synthetic `preset` in `work` (a
    scratch project: params.yaml with the preset, its own MLflow store); the model folder and
    its synthetic test macro AUROC."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"]["preset"] = preset
    params["train"]["progress"] = False  # runtime only: no progress bars in the output
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    for stage in TRAIN_STAGES:
        print(f"train-preset {preset}: olives stage {stage}", flush=True)
        command = [sys.executable, "-m", "olives", "stage", stage]
        subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((work / params["evaluate"]["out_dir"] / "metrics.json").read_text())
    return work / params["train"]["model_dir"], metrics["macro"].get("auroc")


def load_predictor(model: str) -> tuple[Any, Path]:
    """A `Predictor` for `--model` (a file, a folder or an MLflow URI, as `olives predict`)."""
    from olives.models import ModelBundle
    from olives.runtime import Runtime
    from olives.serving.locate import model_file
    from olives.serving.predictor import Predictor

    path = model_file(model)
    runtime = Runtime.from_env()
    bundle = ModelBundle.load(path, runtime.device)
    return Predictor(bundle, runtime, batch_size=32, model_id=str(path)), path


def olives_scan(predictor: Any, path: Path) -> dict[str, Any]:
    """The real OLIVES B-scan's probabilities and decisions (its true labels are not given)."""
    from olives.serving.scans import image_scan

    row = predictor.predict([image_scan(path, predictor.limits)]).iloc[0]
    if pd.notna(row["error"]):
        return {"error": row["error"]}
    labels, thresholds = predictor.bundle.labels, predictor.bundle.thresholds
    return {
        b: {"probability": float(row[f"{b}_prob"]), "threshold": float(t), "true": None}
        for b, t in zip(labels, thresholds, strict=True)
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def table_lines(results: list[dict[str, Any]]) -> list[str]:
    """A plain table: comparison, biomarker, scans and patients (+/-), AUROC [low, high]."""
    head = f"{'comparison':<17} {'biomarker':<14} {'scans +/-':>9} {'patients +/-':>12}  "
    lines = [head + f"{'AUROC [95 % patient bootstrap]':<31} note", "-" * 110]
    for r in results:
        scans, patients = "/".join(map(str, r["scans"])), "/".join(map(str, r["patients"]))
        start = f"{r['comparison']:<17} {r['biomarker']:<14} {scans:>9} {patients:>12}  "
        if "skipped" in r:
            lines.append(start + f"skipped: {r['skipped']}")
            continue
        low, high = r["ci"]
        shown = f"{r['auroc']:.3f} [{low:.3f}, {high:.3f}]" if low is not None else "n/a"
        lines.append(start + f"{shown:<31} {r['note']}")
    return lines


def olives_lines(found: dict[str, Any]) -> list[str]:
    if "error" in found:
        return [f"real OLIVES B-scan: not predicted: {found['error']}"]
    lines = ["real OLIVES B-scan (olives_bscan_504x496.tif; its labels are not published):"]
    for b, v in found.items():
        decided = "present" if v["probability"] >= v["threshold"] else "absent"
        lines.append(
            f"  {b}: probability {v['probability']:.3f} (threshold {v['threshold']:.3f}: "
            f"{decided}); true label: not given"
        )
    return lines


def clinical_note(predictor: Any, frame: pd.DataFrame) -> str:
    """How the missing BCVA/CST were handled, with the counts."""
    stats = predictor.bundle.clinical_stats
    parts = [
        f"{c}: imputed on {int(frame[f'{c}_imputed'].sum())} of {len(frame)} scans with the "
        f"training median {stats[c]['median']:g} (missing flag set; training rows missing it: "
        f"{stats[c].get('missing_train', 'not recorded')})"
        for c in predictor.bundle.clinical
    ]
    return "; ".join(parts) or "the model reads no clinical value"


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models", help="model file or folder, or MLflow URI")
    parser.add_argument("--train-preset", choices=("tiny", "default"), default=None)
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        parser.error(f"--bootstrap must be >= 1, got {args.bootstrap}")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Everything, printed and returned (JSON-ready)."""
    from olives.io import file_sha256

    start = time.perf_counter()
    model, synthetic_auroc = args.model, None
    if args.train_preset:
        trained_dir, synthetic_auroc = train_on_preset(args.train_preset, work)
        model = str(trained_dir)
    trained = time.perf_counter()
    predictor, path = load_predictor(model)
    frame = predict_folder(predictor, Path(args.shared) / KERMANY)
    predicted = time.perf_counter()
    labels = predictor.bundle.labels
    results = [
        row
        for comparison in COMPARISONS
        for row in run_comparison(frame, comparison, labels, args.bootstrap, args.seed)
    ]
    real = Path(args.shared) / OLIVES_SCAN
    scan = olives_scan(predictor, real) if real.is_file() else {"error": f"{real} not found"}
    skipped = frame["problem"].dropna().tolist()
    out = {
        "model": str(path),
        "model_sha256": file_sha256(path),
        "data_source": predictor.bundle.params.get("data.source"),
        "train_preset": args.train_preset,
        "synthetic_test_macro_auroc": synthetic_auroc,  # with --train-preset only
        "kermany": {"scans": len(frame), "used": len(frame) - len(skipped), "left_out": skipped},
        "clinical": clinical_note(predictor, frame),
        "bootstrap": {"unit": "patient", "resamples": args.bootstrap, "seed": args.seed, "ci": CI},
        "comparisons": results,
        "olives_scan": scan,
        "seconds": {
            "train": round(trained - start, 1),
            "predict": round(predicted - trained, 1),
            "total": round(time.perf_counter() - start, 1),
        },
    }
    print_report(out)
    return out


def print_report(out: dict[str, Any]) -> None:
    source = out["data_source"] or "not recorded"
    print(f"model: {out['model']} (sha256 {out['model_sha256'][:12]}, trained on: {source})")
    if out["synthetic_test_macro_auroc"] is not None:
        print(f"synthetic test macro AUROC: {out['synthetic_test_macro_auroc']:.3f}")
    kermany = out["kermany"]
    print(f"Kermany sample: {kermany['used']} of {kermany['scans']} scans used")
    for why in kermany["left_out"]:
        print(f"  left out: {why}")
    print(f"missing clinical values: {out['clinical']}")
    boot = out["bootstrap"]
    print(f"intervals: {boot['resamples']} patient resamples, seed {boot['seed']}\n")
    print("\n".join(table_lines(out["comparisons"])) + "\n")
    print("\n".join(olives_lines(out["olives_scan"])))
    seconds = out["seconds"]
    trained = f"training {seconds['train']:.1f} s, " if out["train_preset"] else ""
    print(
        f"\nwall time: {seconds['total']:.1f} s ({trained}model load + prediction "
        f"{seconds['predict']:.1f} s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kermany = Path(args.shared) / KERMANY
    if not (kermany / "metadata.csv").is_file():
        print(f"skipped: {kermany} not found")
        return 0
    from olives.errors import InputError

    with tempfile.TemporaryDirectory(prefix="sim_to_real_") as tmp:
        try:
            out = run(args, Path(tmp))
        except InputError as exc:  # a missing or foreign model: one line, as `olives predict`
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json is not None:
        from olives.io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
