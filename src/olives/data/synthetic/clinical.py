"""CST measured on the rendered retina, BCVA through it, and the label table.

CST is what a Spectralis reports: the mean retinal thickness, ILM to the RPE bottom, over the
central 1 mm subfield of the foveal B-scan. Measuring it on the renderer's own geometry ties it
to what the images show (B5 edema thickens the retina and fills the pit, B6 cysts lift it)
instead of drawing it from label statistics. It needs only the first, cheap draws of the
render stream (`draw_geometry`), taken at the reference size: `label_table` (no pixels) and
`generate` (any image size) get the same value, and the parent process knows CST and BCVA
before workers render.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from olives.config import BIOMARKERS, SyntheticSource
from olives.data.synthetic.anatomy import (
    REF_HEIGHT,
    REF_WIDTH,
    Geometry,
    boundaries,
    cyst_lift,
    draw_geometry,
    render_rng,
    scan_cysts,
    scan_edema,
)
from olives.data.synthetic.labels import Volume, draw_volumes, image_path, with_cst
from olives.data.synthetic.presets import Sizes, resolve_preset

# Spectralis-like scales of the 504 x 496 reference image (6 mm wide scan).
AXIAL_UM = 3.87
LATERAL_UM = 6000.0 / REF_WIDTH
CENTRAL_UM = 1000.0  # the central subfield's diameter


def foveal_scan(vol: Volume) -> int:
    """Index of the B-scan through the fovea."""
    return min(int(vol.centre * vol.scans), vol.scans - 1)


def measure_cst(vol: Volume, geo: Geometry) -> float:
    """CST (micrometres, unrounded) of `vol` on the retina `geo`: the foveal scan's labels and
    margins set its edema and cysts, the pit is taken at its deepest (u = centre)."""
    j = foveal_scan(vol)
    xs = np.arange(geo.width, dtype=np.float32) - np.float32(geo.xc)
    edema = scan_edema(vol, geo, j, xs, float(geo.vis[4]))
    lift = cyst_lift(geo, xs, scan_cysts(vol, geo, j))
    tops = boundaries(geo, np.zeros_like(xs), xs, vol.centre, vol.centre, edema, lift)
    um_per_row = AXIAL_UM * REF_HEIGHT / geo.height
    um_per_col = LATERAL_UM * REF_WIDTH / geo.width
    central = np.abs(xs) * um_per_col <= CENTRAL_UM / 2
    return float((tops[-1] - tops[0])[central].mean()) * um_per_row


def measured(vol: Volume, seed: int, difficulty: float) -> Volume:
    """`vol` with the CST measured on its reference-size geometry and the BCVA that follows."""
    rng = render_rng(vol, seed)
    geo = draw_geometry(vol, int(REF_WIDTH), int(REF_HEIGHT), difficulty, rng)
    return with_cst(vol, measure_cst(vol, geo))


def iter_volumes(
    sizes: Sizes, seed: int, split: str, include_unlabeled: bool = False
) -> Iterator[Volume]:
    """Every volume of `split` in patient, eye, visit order, with its labels and clinical
    values (no pixels): what `generate`, `iter_images` and `label_table` all write."""
    for vol in draw_volumes(sizes, seed, split, include_unlabeled):
        yield measured(vol, seed, sizes.difficulty)


def label_table(
    cfg: SyntheticSource, seed: int, split: str = "train", include_unlabeled: bool = False
) -> pd.DataFrame:
    """One row per image, without pixels: the exact labels `generate` writes, fast enough to
    check prevalence and correlations at OLIVES scale in tests."""
    sizes = resolve_preset(cfg)
    rows = [
        row
        for vol in iter_volumes(sizes, seed, split, include_unlabeled)
        for row in _volume_rows(vol)
    ]
    return pd.DataFrame(rows)


def _volume_rows(vol: Volume) -> Iterator[dict[str, Any]]:
    for j in range(vol.scans):
        row: dict[str, Any] = {
            "Patient_ID": vol.patient_id,
            "Eye_ID": float(vol.eye_id),
            "laterality": vol.laterality,
            "visit": vol.visit,
            "scan": j,
            "path": image_path(vol, j),
        }
        for k, name in enumerate(BIOMARKERS):
            row[name] = float(vol.labels[j, k]) if vol.labelled else None
        row["BCVA"] = None if math.isnan(vol.bcva) else vol.bcva
        row["CST"] = None if math.isnan(vol.cst) else vol.cst
        yield row
