"""The paper's fusion x loss and init tables: the paired comparisons of each axis's protocol
(`paper/protocol/<axis>.yaml`, `olives.reporting.comparisons`) printed first, then mean ± std
over the runs (patient splits x training seeds) per method and per biomarker.

The runs themselves are trained and evaluated by the `ablate` and `init_cell` stages (DVC
matrix stages in `paper/dvc.yaml`); this module only reads their `metrics.json`, and their
(split, seed) from the run folder's name (`-p<split>-s<seed>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from olives.io import PaperFiles, read_json
from olives.reporting.comparisons import check_runs, comparison_section, method_names
from olives.reporting.protocol import load_protocol
from olives.reporting.tables import latex_table, markdown_table

HEADLINE = (
    ("macro", "auroc"),
    ("macro", "average_precision"),
    ("macro", "f1"),
    (None, "vip_phase1"),
    (None, "vip_phase2"),
)


GRIDS = {"ablation": ("fusion", "loss"), "init": ("init", "mode"), "teacher": ("method",)}
PAIR = re.compile(r"-p(\d+)-s(\d+)$")
PROTOCOLS = Path("paper/protocol")  # one protocol per axis, relative to the repository root


@dataclass(frozen=True)
class Grid:
    """What an axis's runs must cover, and where its protocol is."""

    splits: tuple[int, ...]
    seeds: tuple[int, ...]
    protocols: Path = PROTOCOLS


def pair_of(folder: Path) -> tuple[int, int]:
    """(split, seed) of a run folder named `<...>-p<split>-s<seed>`."""
    found = PAIR.search(folder.name)
    if found is None:
        raise ValueError(f"{folder}: a run folder's name ends in -p<split>-s<seed>")
    return int(found.group(1)), int(found.group(2))


def cell_keys(context: dict[str, Any]) -> dict[str, Any]:
    """The grid coordinates of one run, read from what produced its metrics: fusion and loss,
    and (init axis) the encoder's start and whether the backbone was frozen."""
    init = "contrastive" if context.get("pretrained") == "pretrain" else "imagenet"
    mode = "linear" if context.get("freeze_backbone") else "finetune"
    return {"fusion": context["fusion"], "loss": context["loss"], "init": init, "mode": mode}


def collect(folder: Path, paper: PaperFiles) -> pd.DataFrame | None:
    """One row per finished cell under `folder` (its coordinates and every point estimate), or
    None when no cell has finished there."""
    rows = []
    cells = sorted(p for p in folder.glob("*") if paper.cell_evaluation(p).metrics.is_file())
    for cell in cells:
        metrics = read_json(paper.cell_evaluation(cell).metrics)
        split, seed = pair_of(cell)
        row = {**cell_keys(metrics["context"]), "split": split, "seed": seed}
        rows.append({**row, **estimates(metrics)})
    return pd.DataFrame(rows) if rows else None


def estimates(metrics: dict[str, Any]) -> dict[str, Any]:
    """Every point estimate of one run's `metrics.json`: the headline and per biomarker."""
    row = {}
    for block, key in HEADLINE:
        row[f"{block}_{key}" if block else key] = (metrics[block] if block else metrics)[key]
    for label, entry in metrics["per_label"].items():
        row[f"{label}_auroc"] = entry["auroc"]
        row[f"{label}_f1"] = entry["f1"]
    return row


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
    table["runs"] = stats[(columns[0], "count")].astype(int).to_numpy()
    return table


def grid_tables(runs: pd.DataFrame, keys: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(headline table, per-biomarker AUROC table) of one grid, mean ± std over its runs."""
    headline = [f"{b}_{k}" if b else k for b, k in HEADLINE]
    labels = [
        c.removesuffix("_auroc") for c in runs.columns if c.endswith("_auroc") and c not in headline
    ]
    per_label = [f"{label}_auroc" for label in labels]
    main = format_cells(mean_std(runs, keys, headline), keys, headline)
    return main, format_cells(mean_std(runs, keys, per_label), keys, per_label)


def write_grid(out_dir: Path, name: str, runs: pd.DataFrame, title: str, grid: Grid) -> list[str]:
    """`<name>.csv`, `<name>_per_biomarker.csv`, `<name>_runs.csv`, `<name>_paired.csv` and
    LaTeX tables of one axis; returns its Markdown section: the protocol and its paired
    comparisons first, then mean ± std per method."""
    keys = GRIDS[name]
    runs = runs.sort_values([*keys, "split", "seed"]).reset_index(drop=True)
    protocol = load_protocol(grid.protocols / f"{name}.yaml")
    ran = set(method_names(runs, protocol))  # a method with no run at all is "not run"
    missing = [m for m in check_runs(runs, protocol, grid.splits, grid.seeds) if m[0] in ran]
    if missing:
        method, split, seed = missing[0]
        raise FileNotFoundError(
            f"{out_dir}: {len(missing)} run(s) of the {name} axis have no metrics, e.g. "
            f"{method} on patient split {split}, seed {seed}: finish the grid first"
        )
    compared = comparison_section(out_dir, runs, protocol, grid.splits, grid.seeds)
    main, biomarkers = grid_tables(runs, keys)
    runs.to_csv(out_dir / f"{name}_runs.csv", index=False)
    main.to_csv(out_dir / f"{name}.csv", index=False)
    biomarkers.to_csv(out_dir / f"{name}_per_biomarker.csv", index=False)
    (out_dir / f"{name}.tex").write_text(
        latex_table(
            main,
            caption=f"{title}: mean ± std over patient splits x seeds (test split).",
            label=f"tab:{name}",
        )
    )
    (out_dir / f"{name}_per_biomarker.tex").write_text(
        latex_table(
            biomarkers,
            caption=f"{title}, per-biomarker test AUROC: mean ± std over splits x seeds.",
            label=f"tab:{name}-biomarkers",
        )
    )
    return [
        *compared,
        "### Headline metrics (mean ± std over the runs)",
        "",
        markdown_table(main),
        "",
        "### Test AUROC per biomarker",
        "",
        markdown_table(biomarkers),
        "",
    ]


def write_ablation(paper: PaperFiles, grid: Grid) -> Path:
    """`ablation.md` (each axis with finished runs: its protocol and paired comparisons, then
    headline and per-biomarker AUROC tables), CSVs and LaTeX tables."""
    out_dir = paper.root
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [
        "# The paper's fusion x loss and initialisation axes",
        "",
        "Every method runs on each patient split (split seed: who is in train, validation "
        "and test) with each training seed (initialisation, batch order, augmentation, "
        "dropout and, on the init axis, the contrastive encoder's own pre-training). Methods "
        "are compared by their paired differences over (split, seed), as each axis's "
        "protocol says; the mean ± std tables after them describe the runs, they test "
        "nothing.",
        "",
    ]
    runs, init = collect(paper.runs, paper), collect(paper.init_runs, paper)
    if runs is None and init is None:
        raise FileNotFoundError(f"no finished cell under {paper.root}: run `make paper`")
    if runs is not None:
        runs = runs.drop(columns=["init", "mode"])
        text += [
            f"## Fusion x loss ({len(runs)} runs, the paper's data)",
            "",
            *write_grid(out_dir, "ablation", runs, "Ablation", grid),
        ]
    if init is not None:
        init = init.drop(columns=["loss"])
        text += [
            f"## Initialisation: ImageNet vs clinical-contrastive ({len(init)} runs, fusion "
            f"{', '.join(sorted(init['fusion'].unique()))}, the paper's data)",
            "",
            "`linear`: frozen backbone, only the head learns (linear evaluation); `finetune`: "
            "every weight learns. `contrastive`: the ImageNet encoder after clinically "
            "supervised contrastive pre-training on the train patients' labelled and "
            "unlabelled scans.",
            "",
            *write_grid(out_dir, "init", init, "Initialisation", grid),
        ]
    path = out_dir / "ablation.md"
    path.write_text("\n".join(text))
    return path
