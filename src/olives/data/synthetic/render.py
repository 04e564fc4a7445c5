"""Render B-scans: one volume's render stream -> anatomy -> each scan, in scan order.

Every volume has its own SeedSequence-derived stream (`render_rng`), so a volume renders to the
same pixels in any process and in any order: what lets `generate` farm volumes out to workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from olives.data.schema import BIOMARKERS
from olives.data.synthetic.anatomy import LAYER_FRACTION, Anatomy, draw_anatomy, pixel_scale
from olives.data.synthetic.labels import TAG_RENDER, Volume, iter_volumes
from olives.data.synthetic.paint import (
    noise_floor,
    paint_choroid,
    paint_cysts,
    paint_debris,
    paint_foci,
    paint_hyaloid,
    paint_layers,
    paint_scale_bar,
    paint_vessels,
)
from olives.data.synthetic.presets import SPLITS, Sizes


def render_rng(vol: Volume, seed: int) -> np.random.Generator:
    """The volume's own render stream: its images never depend on generation order."""
    key = [seed, TAG_RENDER, SPLITS.index(vol.split), vol.patient_id, vol.eye_id, vol.visit]
    return np.random.default_rng(np.random.SeedSequence(key))


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
        + an.drift * (u - 0.5)
        + (an.tilt + an.tilt_drift * (u - 0.5)) * xs
        - an.curv * (xs / (w / 2)) ** 2
        + an.wobble
    )
    edema = _edema(vol, an, j, xs, vis[4])
    cysts = _scan_cysts(vol, an, j)
    bump = np.zeros(w, dtype=np.float32)
    for x0, _, rx, ry in cysts:
        bump += 0.9 * ry * np.exp(-0.5 * ((xs + an.xc - x0) / (2.5 * rx)) ** 2)
    tops = _boundaries(an, rpe, xs, u, vol.centre, edema, bump)
    signal = np.zeros((h, w), dtype=np.float32)
    levels = np.repeat(an.levels[:, None], w, axis=1)
    levels[5] *= 1.0 - 0.35 * np.minimum(edema / an.thick, 1.0)  # spongy, darker ONL
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


def _edema(vol: Volume, an: Anatomy, j: int, xs: np.ndarray, vis: float) -> np.ndarray:
    """Diffuse thickening (px per column) of a B5-positive scan, larger deep inside the run."""
    if not vol.labels[j, 4]:
        return np.zeros_like(xs)
    inside = float(np.clip(vol.margins[j, 4] / 0.08, 0.0, 1.0))
    amp = an.thick * 0.5 * vis * (0.6 + 0.4 * inside)
    return (amp * np.exp(-0.5 * (xs / an.edema_width) ** 2)).astype(np.float32)


def _scan_cysts(vol: Volume, an: Anatomy, j: int) -> list[tuple[float, float, float, float]]:
    """(column, depth fraction, x radius, y radius) of the cysts cut by a B6-positive scan.

    Cysts are volume-level tracks, so neighbouring scans cut the same cysts at similar sizes;
    at least one is kept visible in every positive scan."""
    if not vol.labels[j, 5]:
        return []
    sy, sx = pixel_scale(an)
    u = (j + 0.5) / vol.scans
    inside = float(np.clip(vol.margins[j, 5] / 0.08, 0.0, 1.0))
    out = []
    for dx, depth, r, aspect, phase in an.cysts:
        ry = r * (0.45 + 0.55 * inside) * (0.75 + 0.25 * math.cos(6 * math.pi * u + phase))
        out.append((an.xc + dx, depth, ry * aspect * sx / sy, ry))
    largest = max(range(len(out)), key=lambda k: out[k][3])
    x0, depth, rx, ry = out[largest]
    grow = max(1.0, (0.6 + 3.0 * an.vis[5]) * sy / ry)
    out[largest] = (x0, depth, rx * grow, ry * grow)
    return out


def _boundaries(
    an: Anatomy,
    rpe: np.ndarray,
    xs: np.ndarray,
    u: float,
    centre: float,
    edema: np.ndarray,
    bump: np.ndarray,
) -> np.ndarray:
    """(11, W) rows of the layer tops from the ILM down to the RPE bottom."""
    sy, _ = pixel_scale(an)
    t = an.thick
    fovea = math.exp(-(((u - centre) / 0.1) ** 2))
    fill = np.clip(1.0 - 2.0 * edema / t, 0.0, 1.0)
    pit = an.pit_depth * fovea * fill * np.exp(-((xs / an.pit_width) ** 2))
    side = np.clip(1.0 + an.nasal * xs / (an.width / 2), 0.4, 1.8)
    f = LAYER_FRACTION
    thick = np.stack(
        [
            t * f[0] * side * (1 - pit) * an.undulate[0],
            t * f[1] * (1 - pit) * an.undulate[1],
            t * f[2] * (1 - pit) * an.undulate[2],
            t * f[3] * (1 - 0.8 * pit) * an.undulate[3] + 0.3 * edema,
            t * f[4] * (1 - 0.6 * pit) * an.undulate[4] + 0.15 * edema,
            t * f[5] * (1 + 0.35 * pit) * an.undulate[5] + 0.55 * edema + bump,
            np.full_like(xs, t * 0.075),
            np.full_like(xs, 4.5 * sy),
            np.full_like(xs, t * 0.03),
            np.full_like(xs, 8.0 * sy),
        ]
    )
    bottom = rpe + 8.0 * sy
    below = np.cumsum(thick[::-1], axis=0)[::-1]  # thickness from each top to the bottom
    return (np.vstack([bottom - below, bottom[None, :]]) + an.wiggle).astype(np.float32)


def _grain(an: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """This scan's speckle: a random window of the volume's noise pool (a view: no cost)."""
    h, w = an.height, an.width
    dy = int(rng.integers(0, an.noise.shape[0] - h + 1))
    dx = int(rng.integers(0, an.noise.shape[1] - w + 1))
    z = an.noise[dy : dy + h, dx : dx + w]
    return z[:, ::-1] if rng.random() < 0.5 else z


def _finish(signal: np.ndarray, floor: np.ndarray, z: np.ndarray, an: Anatomy) -> np.ndarray:
    """Speckle, gain, 8 bits. Real B-scans are averaged: fine correlated grain, weak (~6 %) on
    tissue but strong (~50 %) on the noise floor."""
    amp = signal * an.grain
    amp += floor * (0.5 - an.grain)
    signal += floor
    amp *= z
    signal += amp
    signal *= an.gain
    np.clip(signal, 0.0, 255.0, out=signal)
    img = signal.astype(np.uint8)
    paint_scale_bar(img)
    return img
