"""Sizes of a synthetic dataset (presets and their checks) and the real statistics it targets.

Kept apart from the label model and renderer so that config checks and calibration targets can
be read without pulling in the generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from olives.config import SyntheticSource

SPLITS: tuple[str, ...] = ("train", "test")
TEST_ID_OFFSET = 1000  # test patients are 1001.. and their eyes 1001..: disjoint from train

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
        # few labels with unlabelled scans, sized for contrastive pre-training on a 2-core CPU
        "pretrain": (24, 12, 2, 8),
        # the paper's axes: every patient in the hub's train split (so each has unlabelled
        # scans), pooled and re-split per split seed; 40 of them test patients per split
        "paper": (64, 1, 2, 8),
        # the paper's axes in tests and quick looks: the same shape, a fifth of the patients
        "paper-small": (14, 1, 1, 4),
    }
)


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
