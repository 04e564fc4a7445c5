"""`generate`: render every volume (in worker processes) and write the hub-schema parquet shards.

Workers render and PNG-encode whole volumes; the parent turns them into rows in patient, eye,
visit, scan order and streams them through one `ShardWriter` per split. The row order and the
bytes therefore depend on the config and the seed only, never on `num_workers`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from olives.config import BIOMARKERS, SyntheticSource
from olives.data.schema import olives_features
from olives.data.shards import ShardWriter
from olives.data.synthetic.clinical import iter_volumes
from olives.data.synthetic.labels import Volume, image_path
from olives.data.synthetic.parallel import ordered_map, resolve_workers
from olives.data.synthetic.png import encode_png
from olives.data.synthetic.presets import SPLITS, Sizes, resolve_preset
from olives.data.synthetic.render import volume_images
from olives.io import reset_dir


def volume_pngs(vol: Volume, sizes: Sizes, seed: int) -> list[bytes]:
    """Every scan of `vol` as PNG bytes, in scan order: the unit of work of one worker (a
    top-level function, so a pool can pickle it)."""
    return [encode_png(img) for img in volume_images(vol, sizes, seed)]


def generate(
    cfg: SyntheticSource, out_dir: Path, seed: int, include_unlabeled: bool = False
) -> dict[str, Any]:
    """Write `out_dir/{train,test}/part-NNNNN.parquet` in the hub schema; return a summary.

    Rows stream through `ShardWriter`, so memory holds one shard and about 2 x workers rendered
    volumes, never the dataset. Unlabelled rows (extra train visits, B1..B6 null) are written
    only when `include_unlabeled`. `cfg.num_workers` processes render (0: every core, 1: this
    process only); the files are byte-identical for any count. The summary: `splits` ->
    {split: rows, labelled_rows, unlabeled_rows, patients, eyes, volumes, files}, plus `rows`,
    `seconds`, `images_per_s`, `workers`, `seed` and the resolved `sizes`."""
    sizes = resolve_preset(cfg)
    workers = resolve_workers(cfg.num_workers)
    features = olives_features()
    start = time.perf_counter()
    volumes = itertools.chain.from_iterable(
        iter_volumes(sizes, seed, split, include_unlabeled) for split in SPLITS
    )
    render = functools.partial(volume_pngs, sizes=sizes, seed=seed)
    written: dict[str, dict[str, int]] = {}
    with closing(ordered_map(render, volumes, workers)) as rendered:
        # one pool for both splits, so workers stay busy across the boundary
        for split, group in itertools.groupby(rendered, key=lambda pair: pair[0].split):
            writer = ShardWriter(reset_dir(Path(out_dir) / split), features, sizes.shard_rows)
            written[split] = _write_split(writer, group)
    splits = {split: written[split] for split in SPLITS}
    seconds = time.perf_counter() - start
    rows = sum(part["rows"] for part in splits.values())
    return {
        "splits": splits,
        "rows": rows,
        "seconds": round(seconds, 3),
        "images_per_s": round(rows / max(seconds, 1e-9), 1),
        "workers": workers,
        "seed": seed,
        "sizes": dataclasses.asdict(sizes),
    }


def _write_split(
    writer: ShardWriter, rendered: Iterator[tuple[Volume, list[bytes]]]
) -> dict[str, int]:
    """Write one split's rendered volumes in order; return its counts for the summary."""
    stats = {"rows": 0, "labelled_rows": 0, "unlabeled_rows": 0}
    patients, eyes, volumes = set(), set(), 0
    for vol, pngs in rendered:
        for j, png in enumerate(pngs):
            writer.write(_row(vol, j, png))
        stats["rows"] += len(pngs)
        stats["labelled_rows" if vol.labelled else "unlabeled_rows"] += len(pngs)
        patients.add(vol.patient_id)
        eyes.add(vol.eye_id)
        volumes += 1
    files = writer.close()
    return stats | {
        "patients": len(patients),
        "eyes": len(eyes),
        "volumes": volumes,
        "files": len(files),
    }


def _row(vol: Volume, j: int, png: bytes) -> dict[str, Any]:
    row: dict[str, Any] = {"Image": {"bytes": png, "path": image_path(vol, j)}}
    for k, name in enumerate(BIOMARKERS):
        row[name] = float(vol.labels[j, k]) if vol.labelled else None
    row["BCVA"] = None if math.isnan(vol.bcva) else vol.bcva
    row["CST"] = None if math.isnan(vol.cst) else vol.cst
    row["Eye_ID"] = float(vol.eye_id)
    row["Patient_ID"] = vol.patient_id
    return row
