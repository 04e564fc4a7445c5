"""The paper's ablation: fusion x loss x seeds, each cell trained and evaluated on the same
cache and split, then mean ± std over seeds per cell and per biomarker.

`olives ablate` runs one cell (a DVC matrix stage in `paper/dvc.yaml`, so finished cells are
cached and `make paper` can be interrupted and resumed); `olives paper` aggregates.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd

from olives.config import Params
from olives.reporting.tables import latex_table, markdown_table

HEADLINE = (
    ("macro", "auroc"),
    ("macro", "average_precision"),
    ("macro", "f1"),
    (None, "vip_phase1"),
    (None, "vip_phase2"),
)


def cell_name(fusion: str, loss: str, seed: int) -> str:
    return f"{fusion}-{loss}-s{seed}"


def cell_params(params: Params, fusion: str, loss: str, seed: int) -> Params:
    """The pipeline's params with this cell's fusion, loss and training seed, writing under
    `paper.out_dir/runs/<cell>/` and logging to the `<experiment>-paper` MLflow experiment."""
    run_dir = Path(params.paper.out_dir) / "runs" / cell_name(fusion, loss, seed)
    train = dataclasses.replace(
        params.train,
        epochs=params.paper.epochs or params.train.epochs,
        model_dir=str(run_dir / "model"),
        report_dir=str(run_dir / "train"),
        checkpoint_dir=str(Path(params.train.checkpoint_dir) / "paper" / run_dir.name),
    )
    return dataclasses.replace(
        params,
        seed=seed,
        model=dataclasses.replace(params.model, fusion=fusion),
        loss=dataclasses.replace(params.loss, name=loss),
        train=train,
        evaluate=dataclasses.replace(params.evaluate, out_dir=str(run_dir / "eval")),
        tracking=dataclasses.replace(
            params.tracking, experiment=f"{params.tracking.experiment}-paper"
        ),
    )


def run_cell(params: Params, fusion: str, loss: str, seed: int) -> dict[str, Any]:
    from olives.evaluate_stage import run_evaluate
    from olives.train_stage import run_train

    cell = cell_params(params, fusion, loss, seed)
    run_train(cell)
    return run_evaluate(cell)


def collect(runs_dir: Path) -> pd.DataFrame:
    """One row per finished cell: fusion, loss, seed and every point estimate."""
    rows = []
    for path in sorted(Path(runs_dir).glob("*/eval/metrics.json")):
        metrics = json.loads(path.read_text())
        ctx = metrics["context"]
        row: dict[str, Any] = {"fusion": ctx["fusion"], "loss": ctx["loss"], "seed": ctx["seed"]}
        for block, key in HEADLINE:
            row[f"{block}_{key}" if block else key] = (metrics[block] if block else metrics)[key]
        for label, entry in metrics["per_label"].items():
            row[f"{label}_auroc"] = entry["auroc"]
            row[f"{label}_f1"] = entry["f1"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no finished ablation cell under {runs_dir}: run `make paper`")
    return pd.DataFrame(rows)


def mean_std(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`0.912 ± 0.011 (n=3)`-ready numbers: mean, std (ddof=1) and count per (fusion, loss)."""
    grouped = runs.groupby(["fusion", "loss"])[columns].agg(["mean", "std", "count"])
    return grouped.reset_index()


def format_cells(stats: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    table = stats[["fusion", "loss"]].copy()
    table.columns = ["fusion", "loss"]
    for col in columns:
        mean, std = stats[(col, "mean")], stats[(col, "std")].fillna(0.0)
        table[col] = [
            f"{m:.3f} ± {s:.3f}" if pd.notna(m) else "n/a" for m, s in zip(mean, std, strict=True)
        ]
    table["seeds"] = stats[(columns[0], "count")].astype(int).to_numpy()
    return table


def write_ablation(runs_dir: Path, out_dir: Path) -> Path:
    """`ablation.md` (headline and per-biomarker AUROC tables), CSVs and LaTeX tables."""
    runs = collect(runs_dir)
    headline = [f"{b}_{k}" if b else k for b, k in HEADLINE]
    labels = [
        c.removesuffix("_auroc") for c in runs.columns if c.endswith("_auroc") and c not in headline
    ]
    per_label = [f"{label}_auroc" for label in labels]
    main = format_cells(mean_std(runs, headline), headline)
    biomarkers = format_cells(mean_std(runs, per_label), per_label)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "ablation_runs.csv", index=False)
    main.to_csv(out_dir / "ablation.csv", index=False)
    biomarkers.to_csv(out_dir / "ablation_per_biomarker.csv", index=False)
    (out_dir / "ablation.tex").write_text(
        latex_table(
            main, caption="Ablation: mean ± std over seeds (test split).", label="tab:ablation"
        )
    )
    (out_dir / "ablation_per_biomarker.tex").write_text(
        latex_table(
            biomarkers,
            caption="Per-biomarker test AUROC: mean ± std over seeds.",
            label="tab:ablation-biomarkers",
        )
    )
    text = [
        "# Ablation: fusion x loss",
        "",
        f"{len(runs)} runs; each cell is the mean ± standard deviation over its seeds, "
        "on the test split. Data and patient split are fixed; the seed changes "
        "initialisation, batch order, augmentation and dropout.",
        "",
        "## Headline metrics",
        "",
        markdown_table(main),
        "",
        "## Test AUROC per biomarker",
        "",
        markdown_table(biomarkers),
        "",
    ]
    path = out_dir / "ablation.md"
    path.write_text("\n".join(text))
    return path
