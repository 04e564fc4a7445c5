"""`olives predict` throughput: scans/s from PNG files on disk to the predictions CSV.

Writes `--scans` synthetic-looking 504 x 496 8-bit PNG B-scans, then times
`olives.serving.predict.run` (reading, decoding, resizing to the model's size, clinical
imputation, the model, the CSV) with the model given by `--model` (default: `models/`, as
`make repro` leaves it).

    python benchmarks/predict.py [--model models] [--scans 512] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from olives.serving import predict


def write_scans(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = (rng.random((496, 504)) * 80).astype(np.uint8)
        pixels[200:260] += 120  # a bright band, like a retina
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        (folder / f"scan_{i:05d}.png").write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models")
    parser.add_argument("--scans", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        write_scans(folder, args.scans)
        start = time.perf_counter()
        table = predict.run(
            [str(folder)], args.model, Path(tmp) / "out.csv", "volume", None, args.batch_size
        )
        seconds = time.perf_counter() - start
    print(
        f"{len(table)} scans (504x496 PNG) in {seconds:.1f} s: {len(table) / seconds:.1f} scans/s"
    )


if __name__ == "__main__":
    main()
