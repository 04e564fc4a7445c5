"""Batches from the cache: the host and device paths agree, DDP shards partition the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tiny_cache
from olives.data.loader import BatchSource, batch_spans, epoch_order, load_splits
from olives.runtime import Runtime, padded_length
from olives.training.loop import steps_per_epoch

CPU = Runtime(torch.device("cpu"))
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> Path:
    root = write_tiny_cache(tmp_path_factory.mktemp("loader"))
    return load_splits(root / "data/cache", root / "data/split", LABELS, ("BCVA", "CST"))["train"]


def test_device_cache_gives_the_host_path_batches(train):
    order = epoch_order(len(train), seed=1, epoch=2, shuffle=True)
    host = list(BatchSource(train, CPU).batches(order, 5, drop_last=True))
    cached = list(BatchSource(train, CPU, on_device=True).batches(order, 5, drop_last=True))
    assert len(host) == len(cached) == len(train) // 5
    for a, b in zip(host, cached, strict=True):
        for field in ("images", "clinical", "labels", "positions"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


def test_batches_hold_the_cached_pixels_in_unit_range(train):
    positions = np.array([3, 0, 7])
    (batch,) = BatchSource(train, CPU).batches(positions, 3)
    expected = train.images[train.rows[positions]].astype(np.float32) / 255.0
    np.testing.assert_array_equal(batch.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(batch.labels.numpy(), train.labels[positions])
    assert batch.images.shape == (3, 1, *train.images.shape[1:])


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_rank_shards_cover_every_row_with_equal_lengths(n, world):
    shards = [epoch_order(n, 0, 0, True, rank, world) for rank in range(world)]
    assert {len(s) for s in shards} == {padded_length(n, world) // world}
    assert set(np.concatenate(shards)) == set(range(n))
    np.testing.assert_array_equal(  # one rank: the plain permutation, as before DDP
        epoch_order(n, 0, 0, True), np.random.default_rng([0, 0]).permutation(n)
    )


def test_steps_per_epoch_matches_the_batches_a_rank_runs():
    for n, batch, world in [(100, 8, 1), (100, 8, 2), (7, 8, 1), (33, 4, 3)]:
        share = len(epoch_order(n, 0, 0, True, 0, world))
        assert steps_per_epoch(n, batch, world) == len(batch_spans(share, batch, True))
