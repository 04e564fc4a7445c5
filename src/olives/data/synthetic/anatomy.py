"""Per-volume rendering constants, drawn once per volume so that neighbouring scans look alike:
the retina's shape (`Geometry`, cheap, what CST is measured on) first, then the pixel constants
(`Anatomy`: reflectivity, speckle pool, choroid texture, vessels, hyaloid). Also the shape of
the retina in each scan (`scan_edema`, `scan_cysts`, `cyst_lift`, `boundaries`), shared by the
renderer and the CST measurement (`clinical`) so that the two cannot disagree."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from olives.config import BIOMARKERS
from olives.data.synthetic.labels import TAG_RENDER, Volume
from olives.data.synthetic.presets import SPLITS, Sizes

# Layers from the inner limiting membrane down: NFL, GCL, IPL, INL, OPL, ONL, IS, EZ, OS, RPE.
# Reflectivity (0-255 before gain) read off the real OLIVES B-scan.
_LAYER_LEVEL = (185.0, 125.0, 145.0, 85.0, 125.0, 62.0, 90.0, 195.0, 140.0, 215.0)
LAYER_FRACTION = (0.12, 0.14, 0.11, 0.11, 0.08, 0.24)  # of the inner six layers
REF_HEIGHT, REF_WIDTH = 496.0, 504.0  # the size every pixel constant of the renderer means
EDGE = 1.8  # width (px) of the soft step between two layers
# Thickness constants, calibrated so that CST measured on the retina (`clinical`) matches the
# real OLIVES CST (mean, spread, skew, correlations with BCVA and B1/B5/B6).
THICK_MEAN, THICK_SD = 73.0, 9.0  # parafoveal thickness (px at the reference height)
EDEMA_AMP = 0.3  # edema height at the edge of a B5 run, fraction of the thickness
EDEMA_GROWTH = 3.0  # extra height per squared margin of the scan inside the run
CYST_LIFT = 0.9  # ONL thickening over a cyst, fraction of its y radius
# Severe cystoid edema: cysts of the most visible B6 volumes (visibility above SEVERE_FROM) grow
# up to 1 + SEVERE_GROWTH times, into the large confluent cavities of untreated DME (Kermany),
# within the retina the smaller cysts lifted (so CST and every clinical value stay as they were).
SEVERE_FROM, SEVERE_GROWTH = 0.6, 2.0
# Share of volumes with drusen-like RPE elevations. Off: at 0.33 they brought DRUSEN-vs-NORMAL
# B6 on real scans nearer 0.5 but the real DME-vs-NORMAL B5 fell to ~0.43 (docs/benchmarks.md).
DRUSEN_SHARE = 0.0


def render_rng(vol: Volume, seed: int) -> np.random.Generator:
    """The volume's own render stream: its images never depend on generation order."""
    key = [seed, TAG_RENDER, SPLITS.index(vol.split), vol.patient_id, vol.eye_id, vol.visit]
    return np.random.default_rng(np.random.SeedSequence(key))


@dataclass(frozen=True)
class Geometry:
    """The retina's shape in one volume: everything the layer boundaries of a scan depend on.

    Drawn first from the render stream, from size-independent scalars only, so that CST can be
    measured on it at the reference size without the expensive pixel constants."""

    width: int
    height: int
    xc: float  # fovea column
    thick: float  # parafoveal retinal thickness (px)
    nasal: float  # NFL thickening towards the nasal side
    pit_width: float
    pit_depth: float
    edema_width: float
    vis: np.ndarray  # (6,) visibility of each biomarker in this volume, in [0, 1]
    cysts: np.ndarray  # (k, 5): column offset, depth, radius, aspect, phase
    severe: float  # growth of the cysts' painted size (>= 1), not of the retina they lift
    undulate: np.ndarray  # (6, W) slow thickness changes of the inner six layers
    wiggle: np.ndarray  # (11, W) small fast ripples of every layer boundary


@dataclass(frozen=True)
class Anatomy(Geometry):
    """Per-volume rendering constants: the geometry plus what only the pixels need."""

    rpe0: float  # RPE row at the fovea
    drift: float  # RPE row change from first to last scan
    tilt: float
    tilt_drift: float
    curv: float
    wobble: np.ndarray  # (W,) slow RPE undulation
    levels: np.ndarray  # layer reflectivity after this volume's gamma
    gain: float
    window: float  # height of the noise band above the retina
    choroid_len: float
    choroid_level: float
    illum: np.ndarray  # (W,) lateral illumination
    noise: np.ndarray  # speckle pool, larger than the image
    tex: np.ndarray  # smooth choroid field, wider than the image: vessels drift across scans
    vessels: np.ndarray  # (k, 4): column, drift, width, shadow strength
    hyaloid: np.ndarray  # (6,): gap, level factor, lift, attachment edge, style, detached flag
    device: Device  # acquisition look: averaging, contrast, registration wedge
    drusen: np.ndarray  # (k, 3): column, half-width, height (px) of RPE elevations


@dataclass(frozen=True)
class Device:
    """How the volume was acquired, drawn after the geometry (so CST never moves): real cohorts
    mix heavily averaged scans (OLIVES: dark vitreous, faint grain) with lightly averaged ones
    (Kermany OCT2017: a grey, grainy vitreous over the whole window, stronger speckle), and
    exports whose registration left a blank wedge in a top corner."""

    floor: float  # vitreous noise-floor level (0-255)
    floor_grain: float  # relative speckle on the floor
    grain: float  # relative speckle on tissue
    top: float  # noisy window's top, fraction of the height (< 0: a band above the retina)
    wedge: np.ndarray  # (3,): side (-1 left, 1 right, 0 none), slope, value (0 or 255)
    deep: float  # floor level left below the choroid, fraction of `floor`
    shift: float  # retina moved down by this fraction of the height (framing)


def pixel_scale(an: Geometry) -> tuple[float, float]:
    """(y, x) factors from the 504x496 reference to this image, so features keep their size
    relative to the retina at any resolution."""
    return an.height / REF_HEIGHT, an.width / REF_WIDTH


def draw_geometry(
    vol: Volume, width: int, height: int, difficulty: float, rng: np.random.Generator
) -> Geometry:
    """The first draws of the render stream: the same numbers at any image size, scaled to it,
    so the geometry at the reference size is the one every render of the volume shows."""
    sy = height / REF_HEIGHT
    vis = np.array([_visibility(rng, difficulty) for _ in BIOMARKERS])
    n_cysts = 1 + int(rng.poisson(2 + 4 * vis[5]))
    severe = 1.0 + SEVERE_GROWTH * max(vis[5] - SEVERE_FROM, 0.0) / (1.0 - SEVERE_FROM)
    cysts = np.column_stack(
        [
            rng.normal(0, 0.12, n_cysts) * width,
            rng.uniform(0.35, 0.75, n_cysts),
            (0.6 + 18 * vis[5] * rng.uniform(0.5, 1.0, n_cysts)) * sy,
            rng.uniform(1.0, 1.7, n_cysts),
            rng.uniform(0, 2 * np.pi, n_cysts),
        ]
    )
    return Geometry(
        width=width,
        height=height,
        xc=width * float(np.clip(0.5 + 0.04 * rng.normal(), 0.35, 0.65)),
        thick=sy * rng.normal(THICK_MEAN, THICK_SD),
        nasal=(1 if vol.laterality == "OD" else -1) * rng.uniform(0.3, 0.8),
        pit_width=width * rng.uniform(0.06, 0.09),
        pit_depth=rng.uniform(0.75, 0.95),
        edema_width=width * rng.uniform(0.16, 0.28),
        vis=vis,
        cysts=cysts,
        severe=severe,
        undulate=_undulations(rng, width, 6),
        wiggle=_wiggles(rng, width, 11, sy),
    )


def draw_anatomy(vol: Volume, sizes: Sizes, rng: np.random.Generator) -> Anatomy:
    """Anatomy and biomarker appearance of one volume from its render stream: the geometry
    first (`draw_geometry`), then the pixel constants, the large ones last."""
    h, w = sizes.height, sizes.width
    geo = draw_geometry(vol, w, h, sizes.difficulty, rng)
    sy, sx = h / REF_HEIGHT, w / REF_WIDTH
    x = np.arange(w, dtype=np.float32)
    wobble = sum(
        rng.uniform(0.5, 2.5)
        * sy
        * np.sin(2 * np.pi * (x / w) * rng.uniform(0.5, 2.5) + rng.uniform(0, 2 * np.pi))
        for _ in range(2)
    )
    gamma = rng.uniform(0.85, 1.2)
    levels = (255.0 * (np.asarray(_LAYER_LEVEL) / 255.0) ** gamma).astype(np.float32)
    n_vessels = int(rng.integers(2, 6))
    vessels = np.column_stack(
        [
            rng.uniform(0.05, 0.95, n_vessels) * w,
            rng.uniform(-0.15, 0.15, n_vessels) * w,
            rng.uniform(2.0, 4.5, n_vessels) * sx,
            rng.uniform(0.35, 0.7, n_vessels),
        ]
    )
    vis = geo.vis
    hyaloid = np.array(
        [
            rng.uniform(1.5, 3.0) + 4 * vis[2],  # gap above the ILM
            rng.uniform(0.8, 1.1),  # level factor
            (1.5 + 60 * vis[1] ** 1.3) * rng.uniform(0.7, 1.2),  # lift of the detached part
            rng.uniform(0.25, 0.75),  # where attachment ends (fraction of width)
            float(rng.integers(0, 3)),  # 0 attached left, 1 right, 2 at the fovea
            rng.uniform(0.0, 1.0) < 0.3 * (0.5 + sizes.difficulty),
        ]
    )
    shape = {f.name: getattr(geo, f.name) for f in dataclasses.fields(geo)}
    device = _draw_device(rng)
    return Anatomy(
        **shape,
        rpe0=h * rng.uniform(0.30, 0.52),  # wide: the retina's row must not tell its thickness
        drift=h * rng.uniform(-0.06, 0.06),
        tilt=rng.uniform(-0.12, 0.12) * h / w,
        tilt_drift=rng.uniform(-0.03, 0.03) * h / w,
        curv=h * rng.uniform(-0.01, 0.06) * rng.choice([1.0, 1.0, 2.0, 3.0]),
        wobble=wobble.astype(np.float32),
        levels=levels,
        gain=float(np.exp(rng.normal(0, 0.08))),
        window=h * rng.uniform(0.16, 0.26),
        choroid_len=sy * rng.uniform(20, 32),
        choroid_level=rng.uniform(105, 145),
        illum=(1.0 + rng.uniform(-0.2, 0.2) * (x / w - 0.5) * 2).astype(np.float32),
        noise=_noise_pool(rng, h, w),
        tex=_choroid_field(rng, h, w + max(4, w // 10), sy, sx),
        vessels=vessels,
        hyaloid=hyaloid,
        device=device,
        drusen=_draw_drusen(rng, w, sy, sx),
    )


def _draw_device(rng: np.random.Generator) -> Device:
    """Half the volumes look heavily averaged (OLIVES), half lightly (Kermany-like)."""
    light = rng.random() < 0.5
    side = float(rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0]))
    return Device(
        floor=rng.uniform(25, 45) if light else rng.uniform(10, 20),
        floor_grain=rng.uniform(0.6, 0.85) if light else 0.5,
        grain=rng.uniform(0.12, 0.22) if light else rng.uniform(0.05, 0.08),
        top=rng.uniform(0.0, 0.03) if light else -1.0,
        wedge=np.array([side, rng.uniform(0.05, 0.25), 255.0 * float(rng.random() < 0.7)]),
        deep=rng.uniform(0.5, 0.9) if light else 0.04,
        shift=rng.uniform(0.0, 0.12) if light else 0.0,
    )


def _draw_drusen(rng: np.random.Generator, w: int, sy: float, sx: float) -> np.ndarray:
    """RPE elevations of an older eye, independent of every label (`DRUSEN_SHARE` of volumes):
    the retina's outer band bulges, the fluid labels stay what they are."""
    k = int(rng.poisson(3.0)) if rng.random() < DRUSEN_SHARE else 0
    return np.column_stack(
        [
            rng.uniform(0.1, 0.9, k) * w,
            rng.uniform(6, 22, k) * sx,
            rng.uniform(3, 12, k) * sy,
        ]
    ).reshape(k, 3)


def scan_edema(vol: Volume, an: Geometry, j: int, xs: np.ndarray, vis: float) -> np.ndarray:
    """Diffuse thickening (px per column) of a B5-positive scan, growing with the square of its
    margin: deep inside a wide run the edema is thick, which ties CST to the B5 extent and gives
    its right skew."""
    if not vol.labels[j, 4]:
        return np.zeros_like(xs)
    margin = max(float(vol.margins[j, 4]), 0.0)
    inside = min(margin / 0.08, 1.0)
    amp = an.thick * vis * (EDEMA_AMP * (0.6 + 0.4 * inside) + EDEMA_GROWTH * margin**2)
    return (amp * np.exp(-0.5 * (xs / an.edema_width) ** 2)).astype(np.float32)


def scan_cysts(vol: Volume, an: Geometry, j: int) -> list[tuple[float, float, float, float]]:
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
    return [(x, d, rx * an.severe, ry * an.severe) for x, d, rx, ry in out]


def cyst_lift(an: Geometry, xs: np.ndarray, cysts: Sequence[tuple[float, ...]]) -> np.ndarray:
    """(W,) px by which the cysts of a scan thicken the ONL: fluid adds volume."""
    lift = np.zeros(an.width, dtype=np.float32)
    for x0, _, rx, ry in cysts:
        height = CYST_LIFT * ry / an.severe  # severe cavities fill the tissue, CST stays
        lift += height * np.exp(-0.5 * ((xs + an.xc - x0) / (2.5 * rx / an.severe)) ** 2)
    return lift


def boundaries(
    an: Geometry,
    rpe: np.ndarray,
    xs: np.ndarray,
    u: float,
    centre: float,
    edema: np.ndarray,
    lift: np.ndarray,
) -> np.ndarray:
    """(11, W) rows of the layer tops from the ILM down to the RPE bottom."""
    sy, _ = pixel_scale(an)
    t = an.thick
    fovea = math.exp(-(((u - centre) / 0.1) ** 2))
    fill = np.clip(1.0 - 3.0 * edema / t, 0.0, 1.0)  # edema fills the pit: a flat fovea
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
            t * f[5] * (1 + 0.35 * pit) * an.undulate[5] + 0.55 * edema + lift,
            np.full_like(xs, t * 0.075),
            np.full_like(xs, 4.5 * sy),
            np.full_like(xs, t * 0.03),
            np.full_like(xs, 8.0 * sy),
        ]
    )
    bottom = rpe + 8.0 * sy
    below = np.cumsum(thick[::-1], axis=0)[::-1]  # thickness from each top to the bottom
    return (np.vstack([bottom - below, bottom[None, :]]) + an.wiggle).astype(np.float32)


def _undulations(rng: np.random.Generator, w: int, n: int) -> np.ndarray:
    """(n, w) factors near 1: layers thicken and thin slowly along the scan, as in real eyes."""
    x = np.arange(w, dtype=np.float32)[None, :] / w
    out = np.ones((n, w), dtype=np.float32)
    for _ in range(2):
        freq = rng.uniform(0.5, 3.0, (n, 1))
        out += rng.uniform(0.03, 0.09, (n, 1)) * np.sin(
            2 * np.pi * freq * x + rng.uniform(0, 2 * np.pi, (n, 1))
        )
    return out


def _wiggles(rng: np.random.Generator, w: int, n: int, sy: float) -> np.ndarray:
    """(n, w) ripples of about a pixel: real layer boundaries are never perfectly smooth."""
    x = np.arange(w, dtype=np.float32)[None, :] / w
    out = np.zeros((n, w), dtype=np.float32)
    for _ in range(3):
        freq = rng.uniform(6.0, 25.0, (n, 1))
        out += (
            rng.uniform(0.2, 0.6, (n, 1))
            * sy
            * np.sin(2 * np.pi * freq * x + rng.uniform(0, 2 * np.pi, (n, 1)))
        )
    return out


def _visibility(rng: np.random.Generator, difficulty: float) -> float:
    """Beta draw in [0, 1]: mean 0.75 at difficulty 0, 0.42 at 0.5 (a quarter of the positives
    below 0.2, i.e. nearly invisible), 0.08 at 1."""
    return float(rng.beta(0.2 + 1.6 * (1 - difficulty), 0.6 + 1.6 * difficulty))


def _choroid_field(rng: np.random.Generator, h: int, w: int, sy: float, sx: float) -> np.ndarray:
    """Vessel lumens (rounded blobs) plus faint vertical streaks, as under a real RPE."""
    blobs = _smooth_field(rng, h, w, 7.0 * sy, 6.0 * sx)
    streaks = _smooth_field(rng, 1, w, 1.0, 2.0 * sx)
    field = blobs + 0.3 * streaks
    return (field / field.std()).astype(np.float32)


def _smooth_field(
    rng: np.random.Generator, h: int, w: int, sigma_y: float, sigma_x: float
) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise, filtered by FFT: round blobs, no grid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    gain = np.exp(-2 * np.pi**2 * ((fy * sigma_y) ** 2 + (fx * sigma_x) ** 2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * gain, s=(h, w))
    return ((field - field.mean()) / (field.std() + 1e-9)).astype(np.float32)


def _noise_pool(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit-variance grain with the lag-1 correlation of real B-scans (~0.7), a margin larger
    than the image so each scan can take its own window. (Unsmoothed axial grain for lightly
    averaged volumes was tried: it moved the axial spectra away from Kermany's.)"""
    pad = max(8, h // 8)
    z = rng.standard_normal((h + pad + 2, w + pad + 2)).astype(np.float32)
    z = np.sign(z) * np.abs(z) ** 1.15  # slightly heavy-tailed, like log-compressed speckle
    z = z[:-2] + 2.0 * z[1:-1] + z[2:]  # [1, 2, 1] in both directions
    z = z[:, :-2] + 2.0 * z[:, 1:-1] + z[:, 2:]
    return (z / z.std()).astype(np.float32)
