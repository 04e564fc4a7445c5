"""The paper's ablation table: mean ± std over seeds per cell and per biomarker.

The cells themselves are trained and evaluated by the `ablate` stage (`olives.stages.ablate`,
a DVC matrix stage in `paper/dvc.yaml`); this module only reads their `metrics.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from olives.io import PaperFiles, read_json
from olives.reporting.tables import latex_table, markdown_table

HEADLINE = (
    ("macro", "auroc"),
    ("macro", "average_precision"),
    ("macro", "f1"),
    (None, "vip_phase1"),
    (None, "vip_phase2"),
)


GRIDS = {"ablation": ("fusion", "loss"), "init": ("init", "mode"), "teacher": ("method",)}


def cell_keys(context: dict[str, Any]) -> dict[str, Any]:
    """The grid coordinates of one cell, read from what produced its metrics: fusion and loss,
    and (init axis) the encoder's start and whether the backbone was frozen."""
    init = "contrastive" if context.get("pretrained") == "pretrain" else "imagenet"
    mode = "linear" if context.get("freeze_backbone") else "finetune"
    return {
        "fusion": context["fusion"],
        "loss": context["loss"],
        "init": init,
        "mode": mode,
        "seed": context["seed"],
    }


def collect(folder: Path, paper: PaperFiles) -> pd.DataFrame | None:
    """One row per finished cell under `folder` (its coordinates and every point estimate), or
    None when no cell has finished there."""
    rows = []
    cells = sorted(p for p in folder.glob("*") if paper.cell_evaluation(p).metrics.is_file())
    for cell in cells:
        metrics = read_json(paper.cell_evaluation(cell).metrics)
        row: dict[str, Any] = cell_keys(metrics["context"])
        for block, key in HEADLINE:
            row[f"{block}_{key}" if block else key] = (metrics[block] if block else metrics)[key]
        for label, entry in metrics["per_label"].items():
            row[f"{label}_auroc"] = entry["auroc"]
            row[f"{label}_f1"] = entry["f1"]
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def mean_std(runs: pd.DataFrame, keys: tuple[str, ...], columns: list[str]) -> pd.DataFrame:
    """`0.912 ± 0.011`-ready numbers: mean, std (ddof=1) and count per cell of the grid."""
    grouped = runs.groupby(list(keys))[columns].agg(["mean", "std", "count"])
    return grouped.reset_index()


def format_cells(stats: pd.DataFrame, keys: tuple[str, ...], columns: list[str]) -> pd.DataFrame:
    table = stats[list(keys)].copy()
    table.columns = list(keys)
    for col in columns:
        mean, std = stats[(col, "mean")], stats[(col, "std")].fillna(0.0)
        table[col] = [
            f"{m:.3f} ± {s:.3f}" if pd.notna(m) else "n/a" for m, s in zip(mean, std, strict=True)
        ]
    table["seeds"] = stats[(columns[0], "count")].astype(int).to_numpy()
    return table


def grid_tables(runs: pd.DataFrame, keys: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(headline table, per-biomarker AUROC table) of one grid, mean ± std over seeds."""
    headline = [f"{b}_{k}" if b else k for b, k in HEADLINE]
    labels = [
        c.removesuffix("_auroc") for c in runs.columns if c.endswith("_auroc") and c not in headline
    ]
    per_label = [f"{label}_auroc" for label in labels]
    main = format_cells(mean_std(runs, keys, headline), keys, headline)
    return main, format_cells(mean_std(runs, keys, per_label), keys, per_label)


def write_grid(out_dir: Path, name: str, runs: pd.DataFrame, title: str) -> list[str]:
    """`<name>.csv`, `<name>_per_biomarker.csv`, `<name>_runs.csv` and LaTeX tables of one
    grid; returns its Markdown section."""
    keys = GRIDS[name]
    main, biomarkers = grid_tables(runs, keys)
    runs.to_csv(out_dir / f"{name}_runs.csv", index=False)
    main.to_csv(out_dir / f"{name}.csv", index=False)
    biomarkers.to_csv(out_dir / f"{name}_per_biomarker.csv", index=False)
    (out_dir / f"{name}.tex").write_text(
        latex_table(
            main, caption=f"{title}: mean ± std over seeds (test split).", label=f"tab:{name}"
        )
    )
    (out_dir / f"{name}_per_biomarker.tex").write_text(
        latex_table(
            biomarkers,
            caption=f"{title}, per-biomarker test AUROC: mean ± std over seeds.",
            label=f"tab:{name}-biomarkers",
        )
    )
    return [
        "### Headline metrics",
        "",
        markdown_table(main),
        "",
        "### Test AUROC per biomarker",
        "",
        markdown_table(biomarkers),
        "",
    ]


def write_ablation(paper: PaperFiles) -> Path:
    """`ablation.md` (each grid with finished cells: headline and per-biomarker AUROC tables),
    CSVs and LaTeX tables."""
    out_dir = paper.root
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [
        "# The paper's grids",
        "",
        "Each cell is the mean ± standard deviation over its seeds, on the test split. Within "
        "a grid, data and patient split are fixed; the seed changes initialisation, batch "
        "order, augmentation and dropout (and, on the init axis, the contrastive encoder's "
        "own pre-training).",
        "",
    ]
    runs, init = collect(paper.runs, paper), collect(paper.init_runs, paper)
    if runs is None and init is None:
        raise FileNotFoundError(f"no finished cell under {paper.root}: run `make paper`")
    if runs is not None:
        runs = runs.drop(columns=["init", "mode"])
        text += [
            f"## Fusion x loss ({len(runs)} runs, the main pipeline's data)",
            "",
            *write_grid(out_dir, "ablation", runs, "Ablation"),
        ]
    if init is not None:
        init = init.drop(columns=["loss"])
        text += [
            f"## Initialisation: ImageNet vs clinical-contrastive ({len(init)} runs, fusion "
            f"{', '.join(sorted(init['fusion'].unique()))}, its own data with unlabelled scans)",
            "",
            "`linear`: frozen backbone, only the head learns (linear evaluation); `finetune`: "
            "every weight learns. `contrastive`: the ImageNet encoder after clinically "
            "supervised contrastive pre-training on the train patients' labelled and "
            "unlabelled scans.",
            "",
            *write_grid(out_dir, "init", init, "Initialisation"),
        ]
    path = out_dir / "ablation.md"
    path.write_text("\n".join(text))
    return path
