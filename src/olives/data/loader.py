"""Batches from the uint8 cache to the model's device: no decoding, no per-image Python work.

Two paths, the same batches (same rows, same order, same values):

- host: one fancy-indexed read of the memory-mapped `images.npy` per batch (rows sorted for
  locality), into pinned memory on CUDA so the copy is asynchronous, with the next batch
  gathered by a background thread while the GPU computes. On a CPU the gather takes well under
  1 % of a step and a second thread only competes with torch's own (measured: 10 % slower on
  2 cores), so there is no thread there.
- device (`train.device_cache`): the split's uint8 images are uploaded once and a batch is an
  index on the GPU: the host does no per-batch work at all.

Either way images cross to the device as uint8 (a quarter of float32's bytes) and become float
in [0, 1] there. Labels and clinical features of the whole split live on the device from the
start. `epoch_order` pads and shards the order like `DistributedSampler`, so under torchrun
every rank runs the same number of steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from olives.config import Params
from olives.data.cache import open_cache
from olives.data.prepare import clinical_features, read_index
from olives.runtime import Runtime, padded_length

log = logging.getLogger(__name__)

# A device cache may use at most this fraction of the GPU's free memory (`auto`).
DEVICE_CACHE_SHARE = 0.5


@dataclass(frozen=True)
class SplitData:
    """One split: cache rows, labels [N, L] (0/1, or probabilities for pseudo-labelled rows),
    clinical features [N, 2C] and optional loss weights [N] (None: every row counts 1)."""

    images: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    clinical: np.ndarray
    frame: pd.DataFrame
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """The split's pixels in bytes (uint8)."""
        return len(self.rows) * int(np.prod(self.images.shape[1:]))


def load_splits(
    cache_dir: Path,
    split_dir: Path,
    labels: tuple[str, ...],
    clinical: tuple[str, ...],
    names: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, SplitData]:
    images, _ = open_cache(cache_dir)
    index = read_index(split_dir)
    out = {}
    for name in names:
        part = index[index["split"] == name].reset_index(drop=True)
        out[name] = SplitData(
            images=images,
            rows=part["row"].to_numpy(np.int64),
            labels=np.array(part[list(labels)], dtype=np.float32),
            clinical=clinical_features(part, clinical),
            frame=part,
        )
    return out


def split_of(
    params: Params,
    name: str,
    labels: tuple[str, ...] | None = None,
    clinical: tuple[str, ...] | None = None,
) -> SplitData:
    """Split `name` of the cache and split folders `params` names, with the model's `labels`
    and `clinical` names (default: the params')."""
    return load_splits(
        Path(params.preprocess.cache_dir),
        Path(params.split.out_dir),
        params.labels if labels is None else labels,
        params.clinical if clinical is None else clinical,
        names=(name,),
    )[name]


@dataclass(frozen=True)
class Batch:
    """One batch on the device."""

    images: torch.Tensor  # [B, 1, H, W] float32 in [0, 1]
    clinical: torch.Tensor  # [B, 2C]
    labels: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B] positions in the split
    weights: torch.Tensor | None = None  # [B] loss weights, when the split has them


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W] -> float32 [B, 1, H, W] in [0, 1], on the tensor's device."""
    return images.unsqueeze(1).float().div_(255.0)


def gather(images: np.ndarray, rows: np.ndarray, pin: bool = False) -> torch.Tensor:
    """One read of the memmap for the whole batch (sorted rows), in the requested order."""
    block = torch.empty((len(rows), *images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
    order = np.argsort(rows, kind="stable")
    block.numpy()[order] = images[rows[order]]
    return block


def epoch_order(
    n: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """This rank's positions for one epoch; depends only on (seed, epoch), so a resumed run
    repeats it exactly. Padded by repeating the first positions, so ranks get equal shares."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return np.resize(order, padded_length(n, world_size))[rank::world_size]


def batch_spans(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    """[start, stop) of each batch; a short last batch is dropped only when there are others."""
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if drop_last and len(spans) > 1 and spans[-1][1] - spans[-1][0] < batch_size:
        spans.pop()
    return spans


def use_device_cache(setting: bool | Literal["auto"], runtime: Runtime, nbytes: int) -> bool:
    """`train.device_cache`: only on CUDA; `auto` when the split takes under half the free
    memory (9.4k OLIVES scans at 224 px are 0.47 GB)."""
    if not runtime.cuda:
        return False
    if setting == "auto":
        free, _ = torch.cuda.mem_get_info(runtime.device)
        return nbytes < DEVICE_CACHE_SHARE * free
    return bool(setting)


class BatchSource:
    """The batches of one split on `runtime.device` (see the module docstring)."""

    def __init__(self, data: SplitData, runtime: Runtime, on_device: bool = False) -> None:
        self.data = data
        self.runtime = runtime
        self.labels = runtime.to_device(torch.from_numpy(data.labels))
        self.clinical = runtime.to_device(torch.from_numpy(data.clinical))
        self.weights = None
        if data.weights is not None:
            self.weights = runtime.to_device(torch.from_numpy(data.weights.astype(np.float32)))
        self.images = self._upload() if on_device else None

    def __len__(self) -> int:
        return len(self.data)

    def _upload(self, chunk: int = 1024) -> torch.Tensor:
        data = self.data
        shape = (len(data), *data.images.shape[1:])
        out = torch.empty(shape, dtype=torch.uint8, device=self.runtime.device)
        for start in range(0, len(data), chunk):
            rows = data.rows[start : start + chunk]
            out[start : start + len(rows)] = self.runtime.to_device(gather(data.images, rows))
        log.info(
            "split of %d images (%.2f GB) cached on %s", len(data), data.nbytes / 1e9, out.device
        )
        return out

    def batches(
        self, positions: np.ndarray, batch_size: int, drop_last: bool = False
    ) -> Iterator[Batch]:
        """Batches of the split's `positions`, in that order."""
        spans = batch_spans(len(positions), batch_size, drop_last)
        if self.images is not None:
            index = self.runtime.to_device(torch.from_numpy(np.ascontiguousarray(positions)))
            for start, stop in spans:
                yield self._batch(self.images[index[start:stop]], index[start:stop])
            return
        chunks = [positions[start:stop] for start, stop in spans]
        for pixels, index in self._host_batches(chunks):
            yield self._batch(self.runtime.to_device(pixels), self.runtime.to_device(index))

    def _batch(self, pixels: torch.Tensor, index: torch.Tensor) -> Batch:
        weights = None if self.weights is None else self.weights[index]
        return Batch(
            to_unit_float(pixels), self.clinical[index], self.labels[index], index, weights
        )

    def _host_batches(
        self, chunks: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pin = self.runtime.cuda

        def load(chunk: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.from_numpy(np.ascontiguousarray(chunk))
            pixels = gather(self.data.images, self.data.rows[chunk], pin)
            return pixels, index.pin_memory() if pin else index

        if not pin:
            yield from map(load, chunks)
            return
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(load, chunks[0]) if chunks else None
            for nxt in chunks[1:]:
                current = pending.result()
                pending = pool.submit(load, nxt)
                yield current
            if pending is not None:
                yield pending.result()
