"""Per-volume rendering constants (`Anatomy`): layer geometry, reflectivity, speckle pool,
choroid texture, vessels and biomarker appearance, drawn once per volume so that neighbouring
scans look alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olives.data.schema import BIOMARKERS
from olives.data.synthetic.labels import Volume
from olives.data.synthetic.presets import Sizes

# Layers from the inner limiting membrane down: NFL, GCL, IPL, INL, OPL, ONL, IS, EZ, OS, RPE.
# Reflectivity (0-255 before gain) read off the real OLIVES B-scan.
_LAYER_LEVEL = (185.0, 125.0, 145.0, 85.0, 125.0, 62.0, 90.0, 195.0, 140.0, 215.0)
LAYER_FRACTION = (0.12, 0.14, 0.11, 0.11, 0.08, 0.24)  # of the inner six layers
REF_HEIGHT, REF_WIDTH = 496.0, 504.0  # the size every pixel constant of the renderer means
EDGE = 1.8  # width (px) of the soft step between two layers


@dataclass(frozen=True)
class Anatomy:
    """Per-volume rendering constants: drawn once so that neighbouring scans look alike."""

    width: int
    height: int
    xc: float  # fovea column
    rpe0: float  # RPE row at the fovea
    drift: float  # RPE row change from first to last scan
    tilt: float
    tilt_drift: float
    curv: float
    wobble: np.ndarray  # (W,) slow RPE undulation
    undulate: np.ndarray  # (6, W) slow thickness changes of the inner six layers
    wiggle: np.ndarray  # (11, W) small fast ripples of every layer boundary
    thick: float  # parafoveal retinal thickness (px)
    nasal: float  # NFL thickening towards the nasal side
    pit_width: float
    pit_depth: float
    levels: np.ndarray  # layer reflectivity after this volume's gamma
    gain: float
    floor: float  # vitreous noise-floor level
    window: float  # height of the noise band above the retina
    choroid_len: float
    choroid_level: float
    illum: np.ndarray  # (W,) lateral illumination
    noise: np.ndarray  # speckle pool, larger than the image
    grain: float  # relative speckle on tissue
    tex: np.ndarray  # smooth choroid field, wider than the image: vessels drift across scans
    vessels: np.ndarray  # (k, 4): column, drift, width, shadow strength
    vis: np.ndarray  # (6,) visibility of each biomarker in this volume, in [0, 1]
    cysts: np.ndarray  # (k, 5): column offset, depth, radius, aspect, phase
    hyaloid: np.ndarray  # (6,): gap, level factor, lift, attachment edge, style, detached flag
    edema_width: float


def pixel_scale(an: Anatomy) -> tuple[float, float]:
    """(y, x) factors from the 504x496 reference to this image, so features keep their size
    relative to the retina at any resolution."""
    return an.height / REF_HEIGHT, an.width / REF_WIDTH


def draw_anatomy(vol: Volume, sizes: Sizes, rng: np.random.Generator) -> Anatomy:
    """Anatomy and biomarker appearance of one volume from its render stream."""
    h, w = sizes.height, sizes.width
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
    tilt = rng.uniform(-0.09, 0.09) * h / w
    illum = (1.0 + rng.uniform(-0.2, 0.2) * (x / w - 0.5) * 2).astype(np.float32)
    n_vessels = int(rng.integers(2, 6))
    vessels = np.column_stack(
        [
            rng.uniform(0.05, 0.95, n_vessels) * w,
            rng.uniform(-0.15, 0.15, n_vessels) * w,
            rng.uniform(2.0, 4.5, n_vessels) * sx,
            rng.uniform(0.35, 0.7, n_vessels),
        ]
    )
    vis = np.array([_visibility(rng, sizes.difficulty) for _ in BIOMARKERS])
    n_cysts = 1 + int(rng.poisson(2 + 4 * vis[5]))
    cysts = np.column_stack(
        [
            rng.normal(0, 0.12, n_cysts) * w,
            rng.uniform(0.35, 0.75, n_cysts),
            (0.6 + 18 * vis[5] * rng.uniform(0.5, 1.0, n_cysts)) * sy,
            rng.uniform(1.0, 1.7, n_cysts),
            rng.uniform(0, 2 * np.pi, n_cysts),
        ]
    )
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
    return Anatomy(
        width=w,
        height=h,
        xc=w * float(np.clip(0.5 + 0.04 * rng.normal(), 0.35, 0.65)),
        rpe0=h * rng.uniform(0.38, 0.48),
        drift=h * rng.uniform(-0.06, 0.06),
        tilt=tilt,
        tilt_drift=rng.uniform(-0.03, 0.03) * h / w,
        curv=h * rng.uniform(-0.01, 0.06),
        wobble=wobble.astype(np.float32),
        undulate=_undulations(rng, w, 6),
        wiggle=_wiggles(rng, w, 11, sy),
        thick=sy * rng.normal(76, 9),
        nasal=(1 if vol.laterality == "OD" else -1) * rng.uniform(0.3, 0.8),
        pit_width=w * rng.uniform(0.06, 0.09),
        pit_depth=rng.uniform(0.75, 0.95),
        levels=levels,
        gain=float(np.exp(rng.normal(0, 0.08))),
        floor=rng.uniform(10, 20),
        window=h * rng.uniform(0.16, 0.26),
        choroid_len=sy * rng.uniform(20, 32),
        choroid_level=rng.uniform(105, 145),
        illum=illum,
        noise=_noise_pool(rng, h, w),
        grain=rng.uniform(0.05, 0.08),
        tex=_choroid_field(rng, h, w + max(4, w // 10), sy, sx),
        vessels=vessels,
        vis=vis,
        cysts=cysts,
        hyaloid=hyaloid,
        edema_width=w * rng.uniform(0.16, 0.28),
    )


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
    than the image so each scan can take its own window."""
    pad = max(8, h // 8)
    z = rng.standard_normal((h + pad + 2, w + pad + 2)).astype(np.float32)
    z = np.sign(z) * np.abs(z) ** 1.15  # slightly heavy-tailed, like log-compressed speckle
    z = z[:-2] + 2.0 * z[1:-1] + z[2:]  # [1, 2, 1] in both directions
    z = z[:, :-2] + 2.0 * z[:, 1:-1] + z[:, 2:]
    return (z / z.std()).astype(np.float32)
