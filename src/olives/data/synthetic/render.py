"""Render B-scans: one volume's render stream -> anatomy -> each scan, in scan order.

Every volume has its own SeedSequence-derived stream (`render_rng`), so a volume renders to the
same pixels in any process and in any order: what lets `generate` farm volumes out to workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from olives.config import BIOMARKERS
from olives.data.synthetic.anatomy import (
    REF_HEIGHT,
    Anatomy,
    boundaries,
    cyst_lift,
    draw_anatomy,
    render_rng,
    scan_cysts,
    scan_edema,
)
from olives.data.synthetic.clinical import iter_volumes
from olives.data.synthetic.labels import Volume
from olives.data.synthetic.paint import (
    drusen_lift,
    noise_floor,
    paint_choroid,
    paint_cysts,
    paint_debris,
    paint_foci,
    paint_hyaloid,
    paint_layers,
    paint_scale_bar,
    paint_vessels,
    paint_wedge,
)
from olives.data.synthetic.presets import Sizes

MOTION_SHARE = 0.08  # share of scans with a motion line


def volume_images(vol: Volume, sizes: Sizes, seed: int) -> Iterator[np.ndarray]:
    """The B-scans of one volume, in scan order."""
    rng = render_rng(vol, seed)
    anatomy = draw_anatomy(vol, sizes, rng)
    for j in range(vol.scans):
        yield render_scan(vol, anatomy, j, rng)


def iter_images(
    sizes: Sizes, seed: int, split: str, include_unlabeled: bool = False
) -> Iterator[tuple[Volume, int, np.ndarray]]:
    """(volume, scan index, image) for every scan of `split`, one volume in memory at a time."""
    for vol in iter_volumes(sizes, seed, split, include_unlabeled):
        for j, img in enumerate(volume_images(vol, sizes, seed)):
            yield vol, j, img


def render_scan(vol: Volume, an: Anatomy, j: int, rng: np.random.Generator) -> np.ndarray:
    """B-scan `j` of `vol` as (height, width) uint8; `rng` adds this scan's speckle and the
    positions of its foci and specks."""
    h, w = an.height, an.width
    u = (j + 0.5) / vol.scans
    # Draws shared by every scan come first, so that a lesion changes only its own pixels.
    vis = np.clip(an.vis * rng.uniform(0.75, 1.2, len(BIOMARKERS)), 0.0, 1.0)
    grain = _grain(an, rng)
    xs = np.arange(w, dtype=np.float32) - an.xc
    rpe = (
        an.rpe0
        + an.device.shift * h
        + an.drift * (u - 0.5)
        + (an.tilt + an.tilt_drift * (u - 0.5)) * xs
        - an.curv * (xs / (w / 2)) ** 2
        + an.wobble
        + _motion(an, xs, rng)
    )
    edema = scan_edema(vol, an, j, xs, vis[4])
    cysts = scan_cysts(vol, an, j)
    tops = boundaries(an, rpe, xs, u, vol.centre, edema, cyst_lift(an, xs, cysts))
    if len(an.drusen):
        tops[6:10] = np.minimum(tops[6:10], tops[10] - 1.0) - drusen_lift(an, xs)
        tops[6:10] = np.maximum(tops[6:10], tops[5] + 1.0)
    signal = np.zeros((h, w), dtype=np.float32)
    levels = np.repeat(an.levels[:, None], w, axis=1)
    swell = np.minimum(2.0 * edema / an.thick, 1.0)
    levels[3:6] *= 1.0 - 0.15 * swell  # a little darker (spongy) under diffuse edema
    paint_layers(signal, tops, levels)
    paint_choroid(signal, an, tops[-1], u)
    paint_cysts(signal, tops, cysts, vis[5])
    if vol.labels[j, 0]:
        paint_foci(signal, tops, an, rng, vis[0])
    paint_vessels(signal, an, tops, u)
    signal *= an.illum
    floor = noise_floor(an, tops[0], tops[-1])
    paint_hyaloid(signal, vol, an, j, tops[0], vis)
    if vol.labels[j, 3]:
        paint_debris(signal, an, tops[0], rng, vis[3])
    return _finish(signal, floor, grain, an)


def _motion(an: Anatomy, xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A motion line in one scan of about twelve: the eye moved axially during the scan, so
    every A-scan after one column sits a few rows higher or lower (not in CST: no retina moves)."""
    step = np.zeros_like(xs)
    if rng.random() < MOTION_SHARE:
        column = rng.uniform(0.1, 0.9) * an.width - an.xc
        rows = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 8.0) * an.height / REF_HEIGHT
        step[xs >= column] = rows
    return step


def _grain(an: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """This scan's speckle: a random window of the volume's noise pool (a view: no cost)."""
    h, w = an.height, an.width
    dy = int(rng.integers(0, an.noise.shape[0] - h + 1))
    dx = int(rng.integers(0, an.noise.shape[1] - w + 1))
    z = an.noise[dy : dy + h, dx : dx + w]
    return z[:, ::-1] if rng.random() < 0.5 else z


def _finish(signal: np.ndarray, floor: np.ndarray, z: np.ndarray, an: Anatomy) -> np.ndarray:
    """Speckle, gain, 8 bits. Real B-scans are averaged: fine correlated grain, weak on tissue
    (~6 % heavily averaged, up to ~18 % lightly) but strong (50-85 %) on the noise floor."""
    grain = an.device.grain
    amp = signal * grain
    amp += floor * (an.device.floor_grain - grain)
    signal += floor
    amp *= z
    signal += amp
    signal *= an.gain
    np.clip(signal, 0.0, 255.0, out=signal)
    img = signal.astype(np.uint8)
    paint_wedge(img, an)
    paint_scale_bar(img)
    return img
