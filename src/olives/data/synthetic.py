"""The embedded offline data source: a deterministic synthetic OLIVES generator.

It writes `<out_dir>/{train,test}/part-NNNNN.parquet` in exactly the Hugging Face
`gOLIVES/OLIVES_Dataset` `biomarker_detection` schema, so every later stage runs unchanged on
real or synthetic data. Two layers, seeded per split, patient and volume (numpy `SeedSequence`),
so the bytes depend on the seed and the sizes, never on generation order:

* a label model (`label_table`, cheap): patient -> eyes -> visits -> volumes of B-scans. A latent
  disease severity drives B1/B5/B6 and BCVA/CST; B2/B3 are vitreous states of one hyaloid; B4 is
  independent. Its constants were calibrated by simulation against the real OLIVES training
  labels (prevalence, label and clinical correlations, runs along the scan axis); the test split
  shifts prevalence towards the VIP Cup RECOVERY set.
* a renderer: layered retina, choroid, speckle and scale bar, with each positive biomarker drawn
  at a visibility set by `difficulty`, vectorised numpy, PNG-encoded with zlib.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from olives.config import SyntheticSource
from olives.data.schema import BIOMARKERS, olives_features
from olives.data.shards import ShardWriter, reset_dir

SPLITS: tuple[str, ...] = ("train", "test")
TEST_ID_OFFSET = 1000  # test patients are 1001.. and their eyes 1001..: disjoint from train

# Entropy tags keep the patient, label and render streams of one volume independent.
_TAG_PATIENT, _TAG_LABELS, _TAG_RENDER, _TAG_STRATA = 11, 23, 37, 41
_NORMAL = NormalDist()

# Targets the generator is calibrated to (tests and benchmarks/synthetic.py check them): real
# OLIVES training labels (9,408 images), the VIP Cup RECOVERY test set, and the real pairwise
# correlations of labels and clinical values.
REAL_TRAIN_PREVALENCE = MappingProxyType(
    {"B1": 0.674, "B2": 0.317, "B3": 0.555, "B4": 0.301, "B5": 0.319, "B6": 0.435}
)
RECOVERY_PREVALENCE = MappingProxyType(
    {"B1": 0.311, "B2": 0.315, "B3": 0.519, "B4": 0.180, "B5": 0.037, "B6": 0.110}
)
REAL_CORRELATIONS = MappingProxyType(
    {
        ("B2", "B3"): -0.76,
        ("B5", "B6"): 0.71,
        ("B1", "B5"): 0.36,
        ("B1", "B6"): 0.41,
        ("BCVA", "CST"): -0.54,
        ("BCVA", "B5"): -0.43,
        ("BCVA", "B6"): -0.40,
        ("BCVA", "B1"): -0.20,
        ("CST", "B5"): 0.53,
        ("CST", "B6"): 0.44,
        ("CST", "B1"): 0.23,
    }
)

PRESETS: Mapping[str, tuple[int, int, int, int]] = MappingProxyType(
    {
        # name: (patients, test_patients, visits, scans_per_volume)
        "tiny": (4, 2, 2, 5),
        "default": (36, 12, 2, 25),
        "full": (87, 40, 2, 49),
    }
)


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """`SyntheticSource` with every preset field filled in."""

    patients: int
    test_patients: int
    visits: int
    scans_per_volume: int
    width: int
    height: int
    difficulty: float
    unlabeled_fraction: float
    shard_rows: int


def resolve_preset(cfg: SyntheticSource) -> Sizes:
    """Fill the `None` fields of `cfg` from its preset; explicit fields win."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"data.synthetic.preset = {cfg.preset!r} is not one of {list(PRESETS)}")
    patients, test_patients, visits, scans = PRESETS[cfg.preset]
    sizes = Sizes(
        patients=_pick(cfg.patients, patients),
        test_patients=_pick(cfg.test_patients, test_patients),
        visits=_pick(cfg.visits, visits),
        scans_per_volume=_pick(cfg.scans_per_volume, scans),
        width=cfg.width,
        height=cfg.height,
        difficulty=float(cfg.difficulty),
        unlabeled_fraction=float(cfg.unlabeled_fraction),
        shard_rows=cfg.shard_rows,
    )
    _check(sizes)
    return sizes


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def _check(s: Sizes) -> None:
    """Reject sizes the generator cannot honour, naming the parameter."""
    at_least = {
        "patients": 1,
        "test_patients": 1,
        "visits": 1,
        "scans_per_volume": 1,
        "width": 32,
        "height": 32,
        "shard_rows": 1,
    }
    for name, low in at_least.items():
        if getattr(s, name) < low:
            raise ValueError(f"data.synthetic.{name} must be >= {low}, got {getattr(s, name)}")
    if not 0.0 <= s.difficulty <= 1.0:
        raise ValueError(f"data.synthetic.difficulty must be in [0, 1], got {s.difficulty}")
    if s.unlabeled_fraction < 0.0:
        raise ValueError(
            f"data.synthetic.unlabeled_fraction must be >= 0, got {s.unlabeled_fraction}"
        )


# ---------------------------------------------------------------------------------------------
# Label model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelModel:
    """Constants of the latent label model (scores > 0 are positive scans).

    Severity s per volume mixes patient, eye and visit terms. B6 is a run of scans around the
    volume centre whose half-width grows with s; B5 is nested inside it; B1 is a noisy central
    bump; B4 is patient-clustered noise; B2/B3 come from one of six vitreous states.
    """

    rho_eye: float = 0.85
    rho_visit: float = 0.8
    treatment: float = 0.3  # severity drop from first to last visit
    two_eyes: float = 0.1
    m6: float = 0.232
    b6: float = 0.165
    s6: float = 0.116
    t6: float = 0.06
    d5: float = 0.092
    s5: float = 0.118
    m1: float = 1.42
    b1: float = 0.975
    s1: float = 0.337
    g1: float = 2.57
    t1: float = 0.9
    ell1: float = 0.06
    icc4: float = 0.6
    m4: float = -0.72
    b4: float = -0.25
    s4: float = 0.832
    t4: float = 1.0
    ell4: float = 0.09
    # vitreous states: full, partial, none, full+partial, none+partial, full+none+partial
    vitreous: tuple[float, ...] = (0.40, 0.10, 0.05, 0.27, 0.13, 0.05)
    cst0: float = 232.0
    cst5: float = 350.0
    cst6: float = 55.0
    cst_s: float = -12.6  # fitted: CST rises through the B5/B6 extents, not severity itself
    cst_noise: float = 28.0
    va0: float = 83.7
    va5: float = 7.3
    va6: float = 7.0
    va_s: float = 1.9
    va_cst: float = 1.3
    va_noise: float = 8.9
    missing: float = 0.005  # chance that a volume lacks BCVA (and, independently, CST)


TRAIN_MODEL = LabelModel()
TEST_MODEL = dataclasses.replace(
    TRAIN_MODEL,
    two_eyes=0.0,
    m6=0.232 - 0.286,
    d5=0.092 + 0.097,
    m1=1.42 - 1.34,
    m4=-0.72 - 0.46,
    vitreous=(0.36, 0.10, 0.08, 0.28, 0.13, 0.05),
)


@dataclass(frozen=True)
class Volume:
    """One OCT volume (one eye at one visit) and everything drawn for it before rendering."""

    split: str
    patient_id: int
    eye_id: int
    laterality: str
    visit: int
    labelled: bool
    severity: float
    centre: float  # fovea position along the scan axis, in (0, 1)
    labels: np.ndarray  # (scans, 6) bool
    margins: np.ndarray  # (scans, 6) float: how far inside the positive region each scan lies
    vitreous: int  # index into LabelModel.vitreous
    bcva: float
    cst: float

    @property
    def scans(self) -> int:
        return int(self.labels.shape[0])


def iter_volumes(
    sizes: Sizes, seed: int, split: str, include_unlabeled: bool = False
) -> Iterator[Volume]:
    """Every volume of `split` in patient, eye, visit order (labels only, no pixels)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    model = TRAIN_MODEL if split == "train" else TEST_MODEL
    code = SPLITS.index(split)
    count = sizes.patients if split == "train" else sizes.test_patients
    offset = 0 if split == "train" else TEST_ID_OFFSET
    eye_id = offset
    strata = _strata(seed, code, count)
    for patient in range(offset + 1, offset + count + 1):
        prng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_PATIENT, code, patient]))
        u_severity, u_debris, u_vitreous = strata[patient - offset - 1]
        z_patient, z_debris = _NORMAL.inv_cdf(u_severity), _NORMAL.inv_cdf(u_debris)
        n_eyes = 2 if prng.random() < model.two_eyes else 1
        sides = ["OD", "OS"] if n_eyes == 2 else [str(prng.choice(["OD", "OS"]))]
        for side in sides:
            eye_id += 1
            z_eye = model.rho_eye * z_patient + math.sqrt(1 - model.rho_eye**2) * prng.normal()
            extra = _extra_visits(prng, sizes.visits, sizes.unlabeled_fraction)
            extra_times = prng.uniform(0.0, 1.0, size=extra)
            u_vit = u_vitreous if side == sides[0] else prng.random()
            vit_eye = int(np.searchsorted(np.cumsum(_normed(model.vitreous)), u_vit))
            n_vis = sizes.visits + (extra if include_unlabeled and split == "train" else 0)
            for visit in range(n_vis):
                labelled = visit < sizes.visits
                when = (
                    visit / max(sizes.visits - 1, 1)
                    if labelled
                    else extra_times[visit - sizes.visits]
                )
                key = [seed, _TAG_LABELS, code, patient, eye_id, visit]
                vrng = np.random.default_rng(np.random.SeedSequence(key))
                yield _draw_volume(
                    vrng,
                    model,
                    sizes.scans_per_volume,
                    split,
                    patient,
                    eye_id,
                    side,
                    visit,
                    labelled,
                    z_eye,
                    z_debris,
                    when,
                    vit_eye,
                )


def _strata(seed: int, code: int, count: int) -> np.ndarray:
    """(count, 3) Latin-hypercube uniforms for the patient-level latents (severity, debris,
    vitreous state): each column covers [0, 1) evenly, so prevalence at OLIVES scale (87
    patients) lands near its target instead of swinging with a few unlucky patients."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_STRATA, code, count]))
    cols = [(rng.permutation(count) + rng.random(count)) / count for _ in range(3)]
    return np.clip(np.column_stack(cols), 1e-6, 1 - 1e-6)


def _normed(p: tuple[float, ...]) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    return arr / arr.sum()


def _extra_visits(rng: np.random.Generator, visits: int, fraction: float) -> int:
    """Unlabelled visits of one eye: `fraction` x labelled visits on average."""
    mean = fraction * visits
    return int(math.floor(mean) + (rng.random() < mean - math.floor(mean)))


def _ar_noise(rng: np.random.Generator, n: int, ell: float) -> np.ndarray:
    """Unit-variance AR(1) along the scan axis with correlation length `ell` (fraction of the
    volume), so runs of labels look alike whatever `scans_per_volume` is."""
    rho = math.exp(-1.0 / (n * ell))
    e = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = e[0]
    k = math.sqrt(1 - rho**2)
    for j in range(1, n):
        out[j] = rho * out[j - 1] + k * e[j]
    return out


def _draw_volume(
    rng: np.random.Generator,
    m: LabelModel,
    n: int,
    split: str,
    patient: int,
    eye_id: int,
    side: str,
    visit: int,
    labelled: bool,
    z_eye: float,
    z_debris: float,
    when: float,
    vit_eye: int,
) -> Volume:
    """Labels and clinical values of one volume from its own random stream."""
    s = m.rho_visit * z_eye + math.sqrt(1 - m.rho_visit**2) * rng.normal() - m.treatment * when
    u = (np.arange(n) + 0.5) / n
    centre = float(np.clip(0.5 + 0.06 * rng.normal(), 0.3, 0.7))
    du = np.abs(u - centre)
    sc6 = m.m6 + m.b6 * s + m.s6 * rng.normal() - du + m.t6 * _ar_noise(rng, n, 0.05)
    sc5 = sc6 - (m.d5 + m.s5 * rng.normal())
    sc1 = m.m1 + m.b1 * s + m.s1 * rng.normal() - m.g1 * du + m.t1 * _ar_noise(rng, n, m.ell1)
    e4 = math.sqrt(m.icc4) * z_debris + math.sqrt(1 - m.icc4) * rng.normal()
    sc4 = m.m4 + m.b4 * s + m.s4 * e4 + m.t4 * _ar_noise(rng, n, m.ell4)
    vit = vit_eye if rng.random() < 0.8 else int(rng.choice(len(m.vitreous), p=_normed(m.vitreous)))
    b2, b3 = _vitreous_labels(rng, vit, u)
    scores = np.stack([sc1, b2 - 0.5, b3 - 0.5, sc4, sc5, sc6], axis=1)
    labels = scores > 0
    f5, f6 = labels[:, 4].mean(), labels[:, 5].mean()
    cst = m.cst0 + m.cst5 * f5**2 + m.cst6 * f6 + m.cst_s * s + m.cst_noise * rng.normal()
    cst = 200 - (200 - cst) * 0.5 if cst < 200 else cst
    bcva = (
        m.va0
        - m.va5 * f5
        - m.va6 * f6
        - m.va_s * s
        - m.va_cst * (cst - 300) / 100
        + m.va_noise * rng.normal()
    )
    bcva_v = float(np.clip(round(bcva), 35, 97))
    cst_v = float(np.clip(round(cst), 150, 800))
    if rng.random() < m.missing:
        bcva_v = math.nan
    if rng.random() < m.missing:
        cst_v = math.nan
    return Volume(
        split=split,
        patient_id=patient,
        eye_id=eye_id,
        laterality=side,
        visit=visit,
        labelled=labelled,
        severity=float(s),
        centre=centre,
        labels=labels,
        margins=scores,
        vitreous=vit,
        bcva=bcva_v,
        cst=cst_v,
    )


def _vitreous_labels(
    rng: np.random.Generator, vit: int, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """B2 (partial) and B3 (full attachment) per scan for one of the six vitreous states."""
    w = rng.uniform(0.15, 0.85)
    c = rng.uniform(w / 2, 1 - w / 2)
    block = np.abs(u - c) < w / 2
    side = (u < c) ^ (rng.random() < 0.5)
    full, none = np.ones_like(block), np.zeros_like(block)
    b2 = {0: none, 1: full, 2: none}.get(vit, block)
    b3 = {0: full, 1: none, 2: none, 3: ~block, 4: none}.get(vit, ~block & side)
    return b2.astype(float), b3.astype(float)


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
            "path": _path(vol, j),
        }
        for k, name in enumerate(BIOMARKERS):
            row[name] = float(vol.labels[j, k]) if vol.labelled else None
        row["BCVA"] = None if math.isnan(vol.bcva) else vol.bcva
        row["CST"] = None if math.isnan(vol.cst) else vol.cst
        yield row


def _path(vol: Volume, j: int) -> str:
    return (
        f"synthetic/P{vol.patient_id:04d}/{vol.laterality}/V{vol.visit + 1}/vol0/scan_{j:02d}.png"
    )


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------

# Layers from the inner limiting membrane down: NFL, GCL, IPL, INL, OPL, ONL, IS, EZ, OS, RPE.
# Reflectivity (0-255 before gain) read off the real OLIVES B-scan.
_LAYER_LEVEL = (185.0, 125.0, 145.0, 85.0, 125.0, 62.0, 90.0, 195.0, 140.0, 215.0)
_LAYER_FRACTION = (0.12, 0.14, 0.11, 0.11, 0.08, 0.24)  # of the inner six layers
_REF_HEIGHT, _REF_WIDTH = 496.0, 504.0  # the sizes every pixel constant below refers to
_EDGE = 1.8  # width (px) of the soft step between two layers


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


def _scale(an: Anatomy) -> tuple[float, float]:
    return an.height / _REF_HEIGHT, an.width / _REF_WIDTH


def draw_anatomy(vol: Volume, sizes: Sizes, rng: np.random.Generator) -> Anatomy:
    """Anatomy and biomarker appearance of one volume from its render stream."""
    h, w = sizes.height, sizes.width
    sy, sx = h / _REF_HEIGHT, w / _REF_WIDTH
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
    _paint_layers(signal, tops, levels)
    _paint_choroid(signal, an, tops[-1], u)
    _paint_cysts(signal, tops, cysts, vis[5])
    if vol.labels[j, 0]:
        _paint_foci(signal, tops, an, rng, vis[0])
    _paint_vessels(signal, an, tops, u)
    signal *= an.illum
    floor = _floor(an, tops[0], tops[-1])
    _paint_hyaloid(signal, vol, an, j, tops[0], vis)
    if vol.labels[j, 3]:
        _paint_debris(signal, an, tops[0], rng, vis[3])
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
    sy, sx = _scale(an)
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
    sy, _ = _scale(an)
    t = an.thick
    fovea = math.exp(-(((u - centre) / 0.1) ** 2))
    fill = np.clip(1.0 - 2.0 * edema / t, 0.0, 1.0)
    pit = an.pit_depth * fovea * fill * np.exp(-((xs / an.pit_width) ** 2))
    side = np.clip(1.0 + an.nasal * xs / (an.width / 2), 0.4, 1.8)
    f = _LAYER_FRACTION
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


def _rows(an: Anatomy, top: float, bottom: float) -> tuple[int, int]:
    """Row range [r0, r1) covering [top, bottom], clipped to the image (possibly empty)."""
    r0 = min(max(0, math.floor(top)), an.height)
    return r0, max(r0, min(an.height, math.ceil(bottom)))


def _paint_layers(signal: np.ndarray, tops: np.ndarray, levels: np.ndarray) -> None:
    """Sum of soft steps: each layer top raises the reflectivity to that layer's level."""
    h = signal.shape[0]
    r0, r1 = max(0, int(tops[0].min()) - 2), min(h, int(tops[-1].max()) + 3)
    if r1 <= r0:
        return
    y = np.arange(r0, r1, dtype=np.float32)[:, None] / _EDGE
    steps = np.diff(
        np.vstack([np.zeros_like(levels[:1]), levels, np.zeros_like(levels[:1])]), axis=0
    )
    band = signal[r0:r1]
    for top, step in zip(tops, steps, strict=True):
        ramp = y - (top / _EDGE - 0.5)
        np.clip(ramp, 0.0, 1.0, out=ramp)
        ramp *= step
        band += ramp


def _paint_choroid(signal: np.ndarray, an: Anatomy, bottom: np.ndarray, u: float) -> None:
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
    onset = np.clip(depth / _EDGE + 0.5, 0.0, 1.0)  # mirrors the RPE's soft lower edge
    np.maximum(depth, 0.0, out=depth)
    fade = np.exp(depth * (-1.0 / an.choroid_len))
    fade *= onset
    fade *= tex
    fade *= an.choroid_level
    signal[r0:r1] += fade


def _paint_cysts(
    signal: np.ndarray, tops: np.ndarray, cysts: list[tuple[float, float, float, float]], vis: float
) -> None:
    """Dark, rounded, well-defined fluid spaces with a faint bright wall."""
    h, w = signal.shape
    for x0, depth, rx, ry in cysts:
        col = int(np.clip(x0, 0, w - 1))
        thick = float(tops[-3][col] - tops[0][col])
        ry = min(ry, 0.3 * thick)
        y0 = float(tops[0][col]) + depth * thick
        xa, xb = max(0, int(x0 - rx) - 2), min(w, int(x0 + rx) + 3)
        ya, yb = max(0, int(y0 - ry) - 2), min(h, int(y0 + ry) + 3)
        if xa >= xb or ya >= yb or ry < 0.5:
            continue
        dx = (np.arange(xa, xb, dtype=np.float32) - x0) / max(rx, 0.5)
        dy = (np.arange(ya, yb, dtype=np.float32) - y0) / ry
        d = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        inner = np.clip((1.0 - d) / 0.15, 0.0, 1.0)
        patch = signal[ya:yb, xa:xb]
        patch *= 1.0 - (0.3 + 0.65 * vis) * inner
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


def _paint_foci(
    signal: np.ndarray, tops: np.ndarray, an: Anatomy, rng: np.random.Generator, v: float
) -> None:
    """B1: small hyperreflective foci in the plexiform and nuclear layers, near the fovea."""
    sy, sx = _scale(an)
    for _ in range(1 + int(rng.poisson(1 + 4 * v))):
        x0 = float(np.clip(an.xc + rng.normal(0, 0.2) * an.width, 0, an.width - 1))
        col = int(x0)
        y0 = rng.uniform(tops[2][col], tops[6][col])
        sig = (0.5 + 2.3 * v * rng.uniform(0.6, 1.0)) * sx
        _stamp(signal, x0, y0, sig, sig * 1.3 * sy / sx, (10 + 185 * v) * rng.uniform(0.8, 1.1))


def _paint_debris(
    signal: np.ndarray, an: Anatomy, ilm: np.ndarray, rng: np.random.Generator, v: float
) -> None:
    """B4: bright specks floating in the vitreous above the retina."""
    sy, sx = _scale(an)
    top = _window_top(an, ilm)
    for _ in range(1 + int(rng.poisson(1.5 + 5 * v))):
        x0 = rng.uniform(0.05, 0.95) * an.width
        col = int(x0)
        sig = (0.7 + 3.2 * v * rng.uniform(0.5, 1.0)) * sx
        sig_y = sig * rng.uniform(0.6, 1.2) * sy / sx
        y0 = max(ilm[col] - rng.uniform(12 * sy, 0.9 * an.window), top[col] + 3 * sig_y)
        _stamp(signal, x0, y0, sig, sig_y, (6 + 150 * v) * rng.uniform(0.7, 1.2))


def _paint_vessels(signal: np.ndarray, an: Anatomy, tops: np.ndarray, u: float) -> None:
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
    """Top row of the imaged depth range per column: everything above it is black."""
    return np.maximum(ilm - an.window, 0.06 * an.height)


def _floor(an: Anatomy, ilm: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Noise floor: a grainy band above the retina, black at the top, near-black deep down.
    Only the two transition bands are computed per pixel; between them the floor is flat."""
    floor = np.zeros((an.height, an.width), dtype=np.float32)
    top, ramp = _window_top(an, ilm), 0.12 * an.window
    r0, r1 = _rows(an, top.min(), (top + ramp).max() + 1)
    floor[r0:] = an.floor
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    floor[r0:r1] *= np.clip((y - top) / ramp, 0.0, 1.0)
    start, span = bottom + an.choroid_len, 2 * an.choroid_len
    b0, _ = _rows(an, start.min(), an.height)
    y = np.arange(b0, an.height, dtype=np.float32)[:, None]
    floor[b0:] *= np.clip(1.0 - (y - start) / span, 0.04, 1.0)
    return floor


def _paint_hyaloid(
    signal: np.ndarray, vol: Volume, an: Anatomy, j: int, ilm: np.ndarray, vis_scan: np.ndarray
) -> None:
    """B3: the posterior hyaloid as a thin line just above the ILM over the whole width (faint
    when subtle); B2: the same line, always visible, attached over part of the width and lifted
    elsewhere (barely lifted when subtle, so it can pass for B3); neither: no line, or sometimes
    a faint fully detached one that never touches the retina."""
    sy = an.height / _REF_HEIGHT
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


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


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
    _paint_scale_bar(img)
    return img


def _noise_pool(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit-variance grain with the lag-1 correlation of real B-scans (~0.7), a margin larger
    than the image so each scan can take its own window."""
    pad = max(8, h // 8)
    z = rng.standard_normal((h + pad + 2, w + pad + 2)).astype(np.float32)
    z = np.sign(z) * np.abs(z) ** 1.15  # slightly heavy-tailed, like log-compressed speckle
    z = z[:-2] + 2.0 * z[1:-1] + z[2:]  # [1, 2, 1] in both directions
    z = z[:, :-2] + 2.0 * z[:, 1:-1] + z[:, 2:]
    return (z / z.std()).astype(np.float32)


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


def _paint_scale_bar(img: np.ndarray) -> None:
    """The 200 µm scale bar: a vertical and a horizontal bar, and the label when it fits."""
    h, w = img.shape
    sy, sx = h / _REF_HEIGHT, w / _REF_WIDTH
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


# ---------------------------------------------------------------------------------------------
# PNG and parquet
# ---------------------------------------------------------------------------------------------


def encode_png(img: np.ndarray) -> bytes:
    """8-bit greyscale PNG, 'Sub' filter and zlib's RLE strategy: three times faster than PIL's
    adaptive filtering and smaller on speckled B-scans, which matters at 100+ images/s."""
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"encode_png needs a 2-D uint8 array, got {img.dtype} {img.shape}")
    h, w = img.shape
    sub = np.empty((h, w + 1), dtype=np.uint8)
    sub[:, 0] = 1  # filter type 'Sub' on every row
    sub[:, 1] = img[:, 0]
    np.subtract(img[:, 1:], img[:, :-1], out=sub[:, 2:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = packer.compress(sub.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def render_rng(vol: Volume, seed: int) -> np.random.Generator:
    """The volume's own render stream: its images never depend on generation order."""
    key = [seed, _TAG_RENDER, SPLITS.index(vol.split), vol.patient_id, vol.eye_id, vol.visit]
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


def generate(
    cfg: SyntheticSource, out_dir: Path, seed: int, include_unlabeled: bool = False
) -> dict[str, Any]:
    """Write `out_dir/{train,test}/part-NNNNN.parquet` in the hub schema; return a summary.

    Rows stream through `ShardWriter`, so memory holds one shard, never the dataset. Unlabelled
    rows (extra train visits, B1..B6 null) are written only when `include_unlabeled`. The
    summary: `splits` -> {split: rows, labelled_rows, unlabeled_rows, patients, eyes, volumes,
    files}, plus `rows`, `seconds`, `images_per_s`, `seed` and the resolved `sizes`."""
    sizes = resolve_preset(cfg)
    features = olives_features()
    splits: dict[str, dict[str, int]] = {}
    start = time.perf_counter()
    for split in SPLITS:
        stats = {"rows": 0, "labelled_rows": 0, "unlabeled_rows": 0}
        patients, eyes, volumes = set(), set(), 0
        writer = ShardWriter(reset_dir(Path(out_dir) / split), features, sizes.shard_rows)
        last = None
        for vol, j, img in iter_images(sizes, seed, split, include_unlabeled):
            writer.write(_row(vol, j, img))
            stats["rows"] += 1
            stats["labelled_rows" if vol.labelled else "unlabeled_rows"] += 1
            patients.add(vol.patient_id)
            eyes.add(vol.eye_id)
            volumes += last is not vol
            last = vol
        files = writer.close()
        splits[split] = stats | {
            "patients": len(patients),
            "eyes": len(eyes),
            "volumes": volumes,
            "files": len(files),
        }
    seconds = time.perf_counter() - start
    rows = sum(part["rows"] for part in splits.values())
    return {
        "splits": splits,
        "rows": rows,
        "seconds": round(seconds, 3),
        "images_per_s": round(rows / max(seconds, 1e-9), 1),
        "seed": seed,
        "sizes": dataclasses.asdict(sizes),
    }


def _row(vol: Volume, j: int, img: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"Image": {"bytes": encode_png(img), "path": _path(vol, j)}}
    for k, name in enumerate(BIOMARKERS):
        row[name] = float(vol.labels[j, k]) if vol.labelled else None
    row["BCVA"] = None if math.isnan(vol.bcva) else vol.bcva
    row["CST"] = None if math.isnan(vol.cst) else vol.cst
    row["Eye_ID"] = float(vol.eye_id)
    row["Patient_ID"] = vol.patient_id
    return row
