"""The label model: patient -> eyes -> visits -> volumes of B-scans, labels only, no pixels.

A latent disease severity drives B1/B5/B6 and BCVA; B2/B3 are vitreous states of one hyaloid;
B4 is independent. CST is not drawn here: `clinical` measures it on the rendered retina, whose
edema and cysts follow the B5/B6 labels, and BCVA then follows the fluid directly and through
that CST (`with_cst`). The constants were calibrated by simulation against the real OLIVES
training labels (prevalence, label and clinical correlations, runs along the scan axis); the
test split shifts prevalence towards the VIP Cup RECOVERY set. Cheap enough to run at OLIVES
scale in tests (`clinical.label_table`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from olives.data.synthetic.presets import SPLITS, TEST_ID_OFFSET, Sizes

# Entropy tags keep the patient, label and render streams of one volume independent.
TAG_PATIENT, TAG_LABELS, TAG_RENDER, TAG_STRATA = 11, 23, 37, 41
_NORMAL = NormalDist()


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
    va0: float = 83.7
    va5: float = 7.3
    va6: float = 7.0
    va_s: float = 1.3
    va_cst: float = 2.0  # letters per 100 um of measured CST
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
    bcva_base: float  # BCVA (letters) before its CST term: severity, fluid extents, noise
    missing: tuple[bool, bool]  # (BCVA, CST) not recorded for this volume
    bcva: float = math.nan  # set with the measured CST (`with_cst`)
    cst: float = math.nan  # micrometres, measured on the rendered retina (`clinical`)

    @property
    def scans(self) -> int:
        return int(self.labels.shape[0])


def draw_volumes(
    sizes: Sizes, seed: int, split: str, include_unlabeled: bool = False
) -> Iterator[Volume]:
    """Every volume of `split` in patient, eye, visit order: labels, no CST/BCVA yet (those
    come from `clinical.iter_volumes`, which measures CST on the retina)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    model = _model(split)
    code = SPLITS.index(split)
    count = sizes.patients if split == "train" else sizes.test_patients
    offset = 0 if split == "train" else TEST_ID_OFFSET
    eye_id = offset
    strata = _strata(seed, code, count)
    for patient in range(offset + 1, offset + count + 1):
        prng = np.random.default_rng(np.random.SeedSequence([seed, TAG_PATIENT, code, patient]))
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
                key = [seed, TAG_LABELS, code, patient, eye_id, visit]
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


def _model(split: str) -> LabelModel:
    return TRAIN_MODEL if split == "train" else TEST_MODEL


def with_cst(vol: Volume, cst: float) -> Volume:
    """`vol` with its measured CST (micrometres) and the BCVA that follows: fluid lowers vision
    directly (`bcva_base`) and through the thickening it causes. Rounded and clipped like the
    real records; a missing value is NaN."""
    bcva = vol.bcva_base - _model(vol.split).va_cst * (cst - 300) / 100
    no_bcva, no_cst = vol.missing
    return dataclasses.replace(
        vol,
        bcva=math.nan if no_bcva else float(np.clip(round(bcva), 35, 97)),
        cst=math.nan if no_cst else float(np.clip(round(cst), 150, 800)),
    )


def _strata(seed: int, code: int, count: int) -> np.ndarray:
    """(count, 3) Latin-hypercube uniforms for the patient-level latents (severity, debris,
    vitreous state): each column covers [0, 1) evenly, so prevalence at OLIVES scale (87
    patients) lands near its target instead of swinging with a few unlucky patients."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, TAG_STRATA, code, count]))
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
    # BCVA's label-stream draws come here, so the label stream never depends on rendering.
    bcva_base = m.va0 - m.va5 * f5 - m.va6 * f6 - m.va_s * s + m.va_noise * rng.normal()
    missing = (bool(rng.random() < m.missing), bool(rng.random() < m.missing))
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
        bcva_base=float(bcva_base),
        missing=missing,
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


def image_path(vol: Volume, j: int) -> str:
    """The `Image.path` of scan `j`: shared by `clinical.label_table` and the parquet rows, so
    the two can be matched row for row."""
    return (
        f"synthetic/P{vol.patient_id:04d}/{vol.laterality}/V{vol.visit + 1}/vol0/scan_{j:02d}.png"
    )
