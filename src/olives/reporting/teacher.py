"""The teacher axis's table: the paired comparisons of its protocol
(`paper/protocol/teacher.yaml`) first, the ensemble members' quality gate, then mean ± std of
every method over the (patient split, training seed) pairs.

Methods: `single`, its same-steps control, the ensemble, the student (plain and with
test-time views), the self-training and shuffled-pseudo-label controls (teacher/dvc.yaml), and
the init axis's ImageNet linear probe of the same pair (paper/dvc.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from olives.io import EvaluateFiles, PaperFiles, read_json
from olives.reporting.ablation import Grid, estimates, write_grid
from olives.reporting.tables import markdown_table

# method -> evaluation folder under teacher/p<split>-s<seed>/
METHODS = {
    "single": "single/eval",
    "single (same steps)": "same_steps/eval",
    "self-training": "self_training/eval",
    "shuffled pseudo-labels": "shuffled/eval",
    "ensemble": "ensemble/eval",
    "student": "student/eval",
    "student + TTA": "student/eval_tta",
}
PROBE = "linear probe"  # the init axis's `imagenet-linear` run of the same pair
MEMBERS = "ensemble/members.csv"


def collect_teacher(paper: PaperFiles, grid: Grid) -> pd.DataFrame:
    """One row per method and (split, seed) with finished metrics: every point estimate."""
    rows = []
    for split in grid.splits:
        for seed in grid.seeds:
            pair = {"split": split, "seed": seed}
            folders = {m: paper.teachers(split, seed) / f for m, f in METHODS.items()}
            folders[PROBE] = paper.init_runs / f"imagenet-linear-{paper.pair(split, seed)}/eval"
            for method, folder in folders.items():
                path = EvaluateFiles(folder).metrics
                if path.is_file():
                    rows.append({"method": method, **pair, **estimates(read_json(path))})
    if not rows:
        raise FileNotFoundError(f"no finished teacher-axis run under {paper.root}/teacher")
    runs = pd.DataFrame(rows)
    order = [*METHODS, PROBE]
    runs["method"] = pd.Categorical(runs["method"], categories=order, ordered=True)
    return runs.sort_values(["method", "split", "seed"]).reset_index(drop=True)


def collect_members(paper: PaperFiles, grid: Grid) -> pd.DataFrame:
    """Every pair's ensemble members with their gate (`stages.paper.ensemble.member_gate`)."""
    tables = []
    for split in grid.splits:
        for seed in grid.seeds:
            path = paper.teachers(split, seed) / MEMBERS
            if path.is_file():
                tables.append(pd.read_csv(path).assign(split=split, seed=seed))
    if not tables:
        return pd.DataFrame(columns=["split", "seed", "member", "passed", "reason"])
    return pd.concat(tables, ignore_index=True)


def gate_lines(members: pd.DataFrame, floor_text: str) -> list[str]:
    """The members' quality gate: who failed it, and that the ensemble includes them."""
    failed = members[~members["passed"].astype(bool)]
    lines = ["### Ensemble members' quality gate", "", floor_text, ""]
    if failed.empty:
        return [*lines, f"All {len(members)} members pass.", ""]
    table = failed[["split", "seed", "member", "best_epoch", "oof_macro_auroc", "reason"]]
    return [
        *lines,
        f"{len(failed)} of {len(members)} members fail; the ensemble of their pair "
        "includes them (members are never dropped after being seen):",
        "",
        markdown_table(table),
    ]


def write_teacher(paper: PaperFiles, grid: Grid, k: int, floor: float) -> Path:
    """`teacher.md` and the axis's CSV / LaTeX tables under `paper.root`."""
    runs = collect_teacher(paper, grid)
    members = collect_members(paper, grid)
    members.to_csv(paper.root / "teacher_members.csv", index=False)
    floor_text = (
        f"A member fails when its best epoch is 0 or its out-of-fold macro AUROC is below "
        f"{floor} (`paper.teacher.min_member_auroc`)."
    )
    text = [
        "# Teacher axis: k-fold ensemble, pseudo-labels, distilled student, controls",
        "",
        "On the paper's data (labelled and unlabelled scans), per patient split and training "
        f"seed. `single`: one model on the labelled train split; `ensemble`: {k} fold teachers "
        "trained within the split's training patients (no validation patient is seen by a "
        "teacher), probabilities averaged, thresholds tuned out of fold and rate-matched on "
        "the unlabelled scans of training patients; `student`: `single`'s recipe plus the "
        "ensemble's soft labels on the unlabelled scans of training patients; `student + "
        "TTA`: the student with test-time views, its temperatures and thresholds refitted on "
        "the validation split's TTA logits. Controls: `single (same steps)`: as many "
        "optimizer steps as the student, on the labelled scans alone; `self-training`: a "
        "student taught by `single` itself; `shuffled pseudo-labels`: a student taught by the "
        "ensemble's labels permuted across scans (placebo); `linear probe`: the init axis's "
        "ImageNet linear probe of the same pair.",
        "",
        *write_grid(paper.root, "teacher", runs, "Teacher axis", grid),
        *gate_lines(members, floor_text),
    ]
    path = paper.root / "teacher.md"
    path.write_text("\n".join(text))
    return path
