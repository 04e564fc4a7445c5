"""Painters of one B-scan: layers, choroid, vessels, biomarkers, noise floor and scale bar.

Each one adds to (or scales) a float32 `signal` in place, touching only the rows it needs, so a
scan costs a few vectorised passes rather than one per layer over the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from olives.data.synthetic.anatomy import EDGE, REF_HEIGHT, REF_WIDTH, Anatomy, pixel_scale
from olives.data.synthetic.clinical import AXIAL_UM, LATERAL_UM
from olives.data.synthetic.labels import Volume


def _rows(an: Anatomy, top: float, bottom: float) -> tuple[int, int]:
    """Row range [r0, r1) covering [top, bottom], clipped to the image (possibly empty)."""
    r0 = min(max(0, math.floor(top)), an.height)
    return r0, max(r0, min(an.height, math.ceil(bottom)))


def paint_layers(signal: np.ndarray, tops: np.ndarray, levels: np.ndarray) -> None:
    """Sum of soft steps: each layer top raises the reflectivity to that layer's level."""
    h = signal.shape[0]
    r0, r1 = max(0, int(tops[0].min()) - 2), min(h, int(tops[-1].max()) + 3)
    if r1 <= r0:
        return
    y = np.arange(r0, r1, dtype=np.float32)[:, None] / EDGE
    steps = np.diff(
        np.vstack([np.zeros_like(levels[:1]), levels, np.zeros_like(levels[:1])]), axis=0
    )
    band = signal[r0:r1]
    for top, step in zip(tops, steps, strict=True):
        ramp = y - (top / EDGE - 0.5)
        np.clip(ramp, 0.0, 1.0, out=ramp)
        ramp *= step
        band += ramp


def paint_choroid(signal: np.ndarray, an: Anatomy, bottom: np.ndarray, u: float) -> None:
    """Textured choroid under the RPE: dark vessel lumens in brighter stroma, fading with depth."""
    r0, r1 = _rows(an, bottom.min(), bottom.max() + 5 * an.choroid_len)
    if r1 <= r0:
        return
    shift = round(u * (an.tex.shape[1] - an.width))
    tex = an.tex[r0:r1, shift : shift + an.width] + 0.3
    tex *= -3.0
    np.exp(tex, out=tex)
    tex += 1.0
    np.reciprocal(tex, out=tex)  # a sigmoid: dark lumens with sharp walls
    tex += 0.3
    depth = np.arange(r0, r1, dtype=np.float32)[:, None] - bottom
    onset = np.clip(depth / EDGE + 0.5, 0.0, 1.0)  # mirrors the RPE's soft lower edge
    np.maximum(depth, 0.0, out=depth)
    fade = np.exp(depth * (-1.0 / an.choroid_len))
    fade *= onset
    fade *= tex
    fade *= an.choroid_level
    signal[r0:r1] += fade


def paint_cysts(
    signal: np.ndarray, tops: np.ndarray, cysts: list[tuple[float, float, float, float]], vis: float
) -> None:
    """Dark, sharp-edged cystoid fluid spaces with a faint bright wall: lobed, not circles,
    nearly as dark as the vitreous when clearly visible."""
    h, w = signal.shape
    for k, (x0, depth, rx, ry) in enumerate(cysts):
        col = int(np.clip(x0, 0, w - 1))
        thick = float(tops[-3][col] - tops[0][col])
        ry = min(ry, 0.42 * thick)
        y0 = float(tops[0][col]) + depth * thick
        y0 = min(max(y0, float(tops[0][col]) + ry + 0.06 * thick), float(tops[-3][col]) - ry)
        xa, xb = max(0, int(x0 - rx) - 2), min(w, int(x0 + rx) + 3)
        ya, yb = max(0, int(y0 - ry) - 2), min(h, int(y0 + ry) + 3)
        if xa >= xb or ya >= yb or ry < 0.5:
            continue
        dx = (np.arange(xa, xb, dtype=np.float32) - x0) / max(rx, 0.5)
        dy = (np.arange(ya, yb, dtype=np.float32) - y0) / ry
        d = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        angle = np.arctan2(dy[:, None], dx[None, :])
        d *= 1.0 + 0.12 * np.cos(3 * angle + 1.7 * k + x0) + 0.06 * np.cos(5 * angle + k)
        inner = np.clip((1.0 - d) / 0.08, 0.0, 1.0)
        patch = signal[ya:yb, xa:xb]
        patch *= 1.0 - (0.45 + 0.53 * vis) * inner
        patch += 25.0 * np.exp(-(((d - 1.05) / 0.12) ** 2))


def _stamp(
    signal: np.ndarray, x0: float, y0: float, sig_x: float, sig_y: float, amp: float
) -> None:
    """Add a Gaussian blob, clipped to the image."""
    h, w = signal.shape
    xa, xb = max(0, int(x0 - 3 * sig_x)), min(w, int(x0 + 3 * sig_x) + 2)
    ya, yb = max(0, int(y0 - 3 * sig_y)), min(h, int(y0 + 3 * sig_y) + 2)
    if xa >= xb or ya >= yb:
        return
    gx = np.exp(-0.5 * ((np.arange(xa, xb, dtype=np.float32) - x0) / sig_x) ** 2)
    gy = np.exp(-0.5 * ((np.arange(ya, yb, dtype=np.float32) - y0) / sig_y) ** 2)
    signal[ya:yb, xa:xb] += amp * gy[:, None] * gx[None, :]


def _shadow(signal: np.ndarray, x0: float, top: float, sig: float, strength: float) -> None:
    """Attenuate the columns around `x0` below row `top`, as a dense reflector does."""
    h, w = signal.shape
    xa, xb = max(0, int(x0 - 2 * sig)), min(w, int(x0 + 2 * sig) + 2)
    r0 = min(max(0, int(top)), h)
    if xa >= xb or r0 >= h:
        return
    prof = np.exp(-0.5 * ((np.arange(xa, xb, dtype=np.float32) - x0) / sig) ** 2)
    signal[r0:, xa:xb] *= 1.0 - strength * prof


def paint_foci(
    signal: np.ndarray, tops: np.ndarray, an: Anatomy, rng: np.random.Generator, v: float
) -> None:
    """B1: small hyperreflective foci in the plexiform and nuclear layers, near the fovea. A
    focus is round in micrometres, so about three times taller than wide in pixels (an OLIVES
    row is 3.9 um, a column 11.9 um)."""
    sy, sx = pixel_scale(an)
    tall = LATERAL_UM / AXIAL_UM
    for _ in range(1 + int(rng.poisson(1 + 4 * v))):
        x0 = float(np.clip(an.xc + rng.normal(0, 0.2) * an.width, 0, an.width - 1))
        col = int(x0)
        y0 = rng.uniform(tops[2][col], tops[6][col])
        sig = (0.5 + 2.3 * v * rng.uniform(0.6, 1.0)) * sx
        sig_y = sig * tall * sy / sx
        _stamp(signal, x0, y0, sig, sig_y, (10 + 185 * v) * rng.uniform(0.8, 1.1))
        if sig > 1.5 * sx and rng.random() < 0.5:  # a dense focus shadows what lies below
            _shadow(signal, x0, y0 + 2 * sig_y, sig, rng.uniform(0.15, 0.35))


def paint_debris(
    signal: np.ndarray, an: Anatomy, ilm: np.ndarray, rng: np.random.Generator, v: float
) -> None:
    """B4: bright specks floating in the vitreous above the retina."""
    sy, sx = pixel_scale(an)
    top = _window_top(an, ilm)
    for _ in range(1 + int(rng.poisson(1.5 + 5 * v))):
        x0 = rng.uniform(0.05, 0.95) * an.width
        col = int(x0)
        sig = (0.7 + 3.2 * v * rng.uniform(0.5, 1.0)) * sx
        sig_y = sig * rng.uniform(0.6, 1.2) * sy / sx
        y0 = max(ilm[col] - rng.uniform(12 * sy, 0.9 * an.window), top[col] + 3 * sig_y)
        _stamp(signal, x0, y0, sig, sig_y, (6 + 150 * v) * rng.uniform(0.7, 1.2))


def paint_vessels(signal: np.ndarray, an: Anatomy, tops: np.ndarray, u: float) -> None:
    """Retinal vessels: a bright cross-section in the inner retina and a shadow beneath it."""
    w = signal.shape[1]
    for col, drift, width, strength in an.vessels:
        x0 = col + drift * (u - 0.5)
        xa, xb = max(0, int(x0 - 3 * width)), min(w, int(x0 + 3 * width) + 2)
        if xa >= xb:
            continue
        c = int(np.clip(x0, 0, w - 1))
        y0 = float(tops[1][c])
        prof = np.exp(-0.5 * ((np.arange(xa, xb, dtype=np.float32) - x0) / width) ** 2)
        _stamp(signal, x0, y0, width, 0.8 * width * an.height / an.width, 40.0)
        signal[max(0, int(y0 + width)) :, xa:xb] *= 1.0 - strength * prof


def _window_top(an: Anatomy, ilm: np.ndarray) -> np.ndarray:
    """Top row of the noisy depth range per column: everything above it is black. Heavily
    averaged scans show a band above the retina; lightly averaged ones the whole window."""
    if an.device.top >= 0:
        return np.full_like(ilm, an.device.top * an.height)
    return np.maximum(ilm - an.window, 0.06 * an.height)


def noise_floor(an: Anatomy, ilm: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Noise floor: a grainy band above the retina, black at the top, near-black deep down.
    Only the two transition bands are computed per pixel; between them the floor is flat."""
    floor = np.zeros((an.height, an.width), dtype=np.float32)
    top, ramp = _window_top(an, ilm), 0.12 * an.window if an.device.top < 0 else 1.0
    r0, r1 = _rows(an, top.min(), (top + ramp).max() + 1)
    floor[r0:] = an.device.floor
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    floor[r0:r1] *= np.clip((y - top) / ramp, 0.0, 1.0)
    start, span = bottom + an.choroid_len, 2 * an.choroid_len
    b0, _ = _rows(an, start.min(), an.height)
    y = np.arange(b0, an.height, dtype=np.float32)[:, None]
    floor[b0:] *= np.clip(1.0 - (y - start) / span, an.device.deep, 1.0)
    return floor


def paint_hyaloid(
    signal: np.ndarray, vol: Volume, an: Anatomy, j: int, ilm: np.ndarray, vis_scan: np.ndarray
) -> None:
    """B3: the posterior hyaloid as a thin line just above the ILM over the whole width (faint
    when subtle); B2: the same line, always visible, attached over part of the width and lifted
    elsewhere (barely lifted when subtle, so it can pass for B3); neither: no line, or sometimes
    a faint fully detached one that never touches the retina."""
    sy = an.height / REF_HEIGHT
    gap, level, height, edge, style, detached = an.hyaloid
    partial, full = vol.labels[j, 1], vol.labels[j, 2]
    x = np.arange(an.width, dtype=np.float32) / an.width
    u = (j + 0.5) / vol.scans
    if partial:
        lift = height * (0.75 + 0.25 * math.sin(2 * math.pi * u + edge * 7))
        if style == 2:
            prof = _smoothstep((np.abs(x - an.xc / an.width) - 0.06) / 0.3)
        else:
            prof = _smoothstep(((x - edge) if style == 0 else (edge - x)) / 0.3)
        offset = (gap + lift * prof) * sy
        vis = vis_scan[1]
        level *= 25 + 85 * vis
    elif full:
        offset = np.full_like(x, gap * sy)
        vis = vis_scan[2]
        level *= 2 + 108 * vis
    elif detached:
        offset = (gap + height + 25 + 10 * np.sin(2 * np.pi * x + edge * 7)) * sy
        vis = 0.3
        level *= 35
    else:
        return
    line = np.maximum(ilm - offset, _window_top(an, ilm) + 2 * sy)
    r0, r1 = _rows(an, line.min() - 4 * sy, line.max() + 4 * sy)
    if r1 <= r0:
        return
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    width = (0.8 + 0.7 * vis) * sy
    signal[r0:r1] += level * np.exp(-(((y - line) / width) ** 2))


def paint_wedge(img: np.ndarray, an: Anatomy) -> None:
    """A blank triangle along the top edge, left by the export's registration (Kermany)."""
    side, slope, value = an.device.wedge
    if side == 0:
        return
    h, w = img.shape
    x = np.arange(w, dtype=np.float32) / w
    rows = slope * 0.25 * h * (1.0 - x if side < 0 else x)
    r1 = int(np.ceil(rows.max()))
    img[:r1][np.arange(r1)[:, None] < rows[None, :]] = int(value)


def drusen_lift(an: Anatomy, xs: np.ndarray) -> np.ndarray:
    """(W,) rows by which drusen lift the RPE and photoreceptors (not Bruch's membrane)."""
    lift = np.zeros(an.width, dtype=np.float32)
    for col, half, height in an.drusen:
        t = np.clip(1.0 - ((xs + an.xc - col) / half) ** 2, 0.0, 1.0)
        lift += height * np.sqrt(t)
    return lift


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


# 5x7 glyphs of the '200 µm' label in the lower-left corner of every OLIVES B-scan.
_GLYPHS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
        "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
        "µ": (".....", "#...#", "#...#", "#...#", "#..##", "###.#", "#...."),
        "m": (".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#", "....."),
        " ": (".....",) * 7,
    }
)


def paint_scale_bar(img: np.ndarray) -> None:
    """The 200 µm scale bar: a vertical and a horizontal bar, and the label when it fits."""
    h, w = img.shape
    sy, sx = h / REF_HEIGHT, w / REF_WIDTH
    bottom = h - max(2, round(10 * sy))
    length = max(3, round(50 * sy))
    left, thick = max(1, round(2 * sx)), max(1, round(2 * min(sx, sy)))
    img[bottom - length : bottom, left : left + thick] = 255
    img[bottom - thick : bottom, left : left + max(3, round(15 * sx))] = 255
    if h < 300 or w < 300:
        return
    x = left + 5
    for ch in "200 µm":
        glyph = np.array([[c == "#" for c in row] for row in _GLYPHS[ch]])
        region = img[bottom - 12 : bottom - 5, x : x + 5]
        region[glyph] = 235
        x += 6
