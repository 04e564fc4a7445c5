"""`single` (paper/teacher/dvc.yaml): the teacher axis's baseline, one model on the labelled
scans only, trained exactly as the `student` but without pseudo-labels; writes
`paper.out_dir/teacher/p<split>-s<seed>/single/`."""

from __future__ import annotations

from typing import Any

from olives.config import Params
from olives.stages.paper.student import BASE, fit_and_test

PARAMS = BASE


def run(params: Params, split: int, seed: int) -> dict[str, Any]:
    return fit_and_test(params, split, seed, "single")
