"""The paper's ablation table: mean ± std over seeds per cell and per biomarker.

The cells themselves are trained and evaluated by the `ablate` stage (`olives.stages.ablate`,
a DVC matrix stage in `paper/dvc.yaml`); this module only reads their `metrics.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from olives.io import read_json
from olives.layout import PaperFiles
from olives.reporting.tables import latex_table, markdown_table

HEADLINE = (
    ("macro", "auroc"),
    ("macro", "average_precision"),
    ("macro", "f1"),
    (None, "vip_phase1"),
    (None, "vip_phase2"),
)


def collect(paper: PaperFiles) -> pd.DataFrame:
    """One row per finished cell: fusion, loss, seed and every point estimate."""
    rows = []
    cells = sorted(p for p in paper.runs.glob("*") if paper.cell_evaluation(p).metrics.is_file())
    for cell in cells:
        metrics = read_json(paper.cell_evaluation(cell).metrics)
        ctx = metrics["context"]
        row: dict[str, Any] = {"fusion": ctx["fusion"], "loss": ctx["loss"], "seed": ctx["seed"]}
        for block, key in HEADLINE:
            row[f"{block}_{key}" if block else key] = (metrics[block] if block else metrics)[key]
        for label, entry in metrics["per_label"].items():
            row[f"{label}_auroc"] = entry["auroc"]
            row[f"{label}_f1"] = entry["f1"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no finished ablation cell under {paper.runs}: run `make paper`")
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


def write_ablation(paper: PaperFiles) -> Path:
    """`ablation.md` (headline and per-biomarker AUROC tables), CSVs and LaTeX tables."""
    runs = collect(paper)
    out_dir = paper.root
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
