"""Shared fixtures. Tests that use the real files in `../shared` skip when it is absent."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the checkout (real OLIVES labels, one B-scan, Kermany sample)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


def png_bytes(seed: int, shape: tuple[int, int] = (40, 48)) -> bytes:
    """A random 8-bit grey PNG, as bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_benchmark(name: str) -> ModuleType:
    """`benchmarks/<name>.py` as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_tiny_cache(
    root: Path, n_patients: int = 12, per_patient: int = 6, size: int = 32, seed: int = 0
) -> Path:
    """A learnable toy cache + split under `root/data`: label j puts a bright square in
    region j of the image, BCVA/CST follow B5/B6. Returns `root`."""
    import pandas as pd

    from olives.config import SplitConfig
    from olives.data.prepare import make_splits
    from olives.data.schema import Columns

    rng = np.random.default_rng(seed)
    labels = ("B1", "B2", "B3", "B4", "B5", "B6")
    n = n_patients * per_patient
    y = (rng.random((n, 6)) < [0.6, 0.3, 0.5, 0.3, 0.3, 0.4]).astype(float)
    images = (rng.random((n, size, size)) * 40).astype(np.uint8)
    cell = size // 3
    for j in range(6):
        r, c = divmod(j, 3)
        images[y[:, j] == 1, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] += 150
    cache = root / "data/cache"
    cache.mkdir(parents=True)
    np.save(cache / "images.npy", images)
    patients = np.repeat(np.arange(n_patients), per_patient)
    index = pd.DataFrame(
        {
            "image_id": [f"train/{i}.png" for i in range(n)],
            "path": [f"{i}.png" for i in range(n)],
            "source_split": "train",
            "row": np.arange(n),
            "sha1": [f"h{i}" for i in range(n)],
            "Patient_ID": patients,
            "eye": patients * 2.0,
            **{b: y[:, j] for j, b in enumerate(labels)},
            "BCVA": 80 - 10 * y[:, 4] + rng.normal(0, 3, n),
            "CST": 300 + 80 * y[:, 5],
            "labelled": True,
        }
    )
    index["dup_group"] = index["row"]
    index.to_parquet(cache / "index.parquet", index=False)
    cols = Columns("Image", labels, ("BCVA", "CST"), "Patient_ID", "Eye_ID")
    split_cfg = SplitConfig(val_fraction=0.25, test_fraction=0.25, candidates=2)
    out, stats, summary = make_splits(index, split_cfg, cols, seed)
    from olives.data.prepare import write_outputs

    write_outputs(root / "data/split", out, stats, summary)
    (root / "data/raw_report.json").write_text('{"splits": {}, "source": "synthetic"}\n')
    return root
