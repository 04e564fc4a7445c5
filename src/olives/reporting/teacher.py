"""The teacher axis's table: single model, k-fold ensemble, distilled student and student +
TTA, mean ± std over seeds, with a plain statement of what helped.

"Helped" is decided on the test split only after every choice was made elsewhere (thresholds
on validation or out of fold, no setting picked on test): a method helped when its mean macro
AUROC over seeds beats the single model's by more than the larger of the two seed standard
deviations, hurt when it trails by as much, and is otherwise within the seeds' spread; TTA is
also judged against the plain student, what it adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from olives.io import EvaluateFiles, PaperFiles, read_json
from olives.reporting.ablation import HEADLINE, write_grid
from olives.reporting.tables import markdown_table

# method -> evaluation folder under teacher/s<seed>/
METHODS = {
    "single": "single/eval",
    "ensemble": "ensemble/eval",
    "student": "student/eval",
    "student + TTA": "student/eval_tta",
}


def collect_teacher(paper: PaperFiles, seeds: tuple[int, ...]) -> pd.DataFrame:
    """One row per method and seed with finished metrics: every point estimate."""
    rows = []
    for seed in seeds:
        for method, folder in METHODS.items():
            path = EvaluateFiles(paper.teachers(seed) / folder).metrics
            if path.is_file():
                rows.append({"method": method, "seed": seed, **estimates(read_json(path))})
    if not rows:
        raise FileNotFoundError(f"no finished teacher-axis cell under {paper.root}/teacher")
    return pd.DataFrame(rows)


def estimates(metrics: dict[str, Any]) -> dict[str, Any]:
    row = {}
    for block, key in HEADLINE:
        row[f"{block}_{key}" if block else key] = (metrics[block] if block else metrics)[key]
    for label, entry in metrics["per_label"].items():
        row[f"{label}_auroc"] = entry["auroc"]
        row[f"{label}_f1"] = entry["f1"]
    return row


def verdicts(runs: pd.DataFrame, metric: str = "macro_auroc") -> list[str]:
    """One sentence per method against the single model, and TTA against the plain student
    (the module's rule)."""
    stats = runs.groupby("method", observed=True)[metric].agg(["mean", "std"]).fillna(0.0)
    if "single" not in stats.index:
        return ["No single-model baseline finished: nothing to compare with."]
    out = [
        verdict(stats, method, "single", "the single model")
        for method in METHODS
        if method in stats.index and method != "single"
    ]
    if {"student", "student + TTA"} <= set(stats.index):
        out.append(verdict(stats, "student + TTA", "student", "the student without TTA"))
    return out


def verdict(stats: pd.DataFrame, method: str, base: str, words: str) -> str:
    row, ref = stats.loc[method], stats.loc[base]
    gap, spread = row["mean"] - ref["mean"], max(row["std"], ref["std"])
    word = "helped" if gap > spread else "hurt" if gap < -spread else "made no clear difference"
    return (
        f"- **{method}** {word} against {words}: macro AUROC {row['mean']:.3f} vs "
        f"{ref['mean']:.3f} ({gap:+.3f}; seed spread {spread:.3f})."
    )


def write_teacher(paper: PaperFiles, seeds: tuple[int, ...], k: int) -> Path:
    """`teacher.md` and the grid's CSV / LaTeX tables under `paper.root`."""
    runs = collect_teacher(paper, seeds)
    runs["method"] = pd.Categorical(runs["method"], categories=list(METHODS), ordered=True)
    runs = runs.sort_values(["method", "seed"]).reset_index(drop=True)
    text = [
        "# Teacher axis: k-fold ensemble, pseudo-labels, distilled student",
        "",
        f"On the init axis's data (labelled and unlabelled scans). `single`: one model on the "
        f"labelled train split; `ensemble`: the {k} fold teachers (trained on the labelled "
        "train and validation patients, k-fold), probabilities averaged, thresholds tuned out "
        "of fold and rate-matched on the unlabelled scans of training patients; `student`: "
        "`single`'s recipe plus the ensemble's soft labels on the "
        "unlabelled scans of training patients; `student + TTA`: the student with test-time "
        "views. Mean ± std over seeds, test split.",
        "",
        *write_grid(paper.root, "teacher", runs, "Teacher axis"),
        "### What helped",
        "",
        *verdicts(runs),
        "",
        markdown_table(runs.groupby("method", observed=True).size().rename("runs").reset_index()),
        "",
    ]
    path = paper.root / "teacher.md"
    path.write_text("\n".join(text))
    return path
