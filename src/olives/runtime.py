"""Where this process runs: device, rank and world size, the one place that knows about them.

Every tensor that meets a model or a loss reaches its device through `Runtime.to_device`, every
value read back comes through `Runtime.to_host` (each one is a host-device sync, so they are few
and visible), and every collective (barrier, all-gather) goes through `Runtime`: the same code is
right on a CPU, on one GPU and under `torchrun` with DistributedDataParallel (NCCL on GPUs,
gloo on CPUs).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from olives.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """This process's device and its place among the `torchrun` processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, shows progress bars and talks to MLflow."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Runtime:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; the local GPU when there is one."""
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        return cls(device, rank, world, local)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Asynchronous when the source is pinned host memory (the loader pins on CUDA)."""
        return tensor.to(self.device, non_blocking=True)

    def to_host(self, tensor: torch.Tensor) -> np.ndarray:
        """A device tensor's values on the host (waits for the device)."""
        return tensor.detach().cpu().numpy()

    def generator(self, seed: int) -> torch.Generator:
        """A random generator on the device: augmentation draws there, the host never waits."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over the ranks; the model itself when there is one."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.cuda else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) to every rank. DDP syncs them at the start
        of each forward, so after the last training step each rank still holds its own."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` (same shape on each rank), concatenated along dim 0."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def shard(self, n: int) -> slice:
        """This rank's positions of a padded sequence of `padded_length(n)` items."""
        return slice(self.rank, padded_length(n, self.world_size), self.world_size)

    def synchronize(self) -> None:
        """Wait for the device (only to read a clock or a value)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


def padded_length(n: int, world_size: int) -> int:
    """`n` rounded up to a multiple of `world_size`, so every rank gets as many items."""
    return -(-n // world_size) * world_size


@contextmanager
def started(runtime: Runtime) -> Iterator[Runtime]:
    """Join the process group for the duration (torchrun); a no-op in a single process."""
    if runtime.cuda:
        torch.cuda.set_device(runtime.device)
    if not runtime.distributed or dist.is_initialized():
        yield runtime
        return
    dist.init_process_group("nccl" if runtime.cuda else "gloo")
    try:
        yield runtime
    finally:
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class LaunchError(InputError):
    """torchrun (started by the stage) failed; its processes printed why."""


def needs_launch(nproc_per_node: int) -> bool:
    """Several processes asked for (`train.nproc_per_node`), and this is not one of them yet."""
    return nproc_per_node > 1 and "LOCAL_RANK" not in os.environ


def torchrun(settings: dict[str, Any], stage: str, n: int) -> None:
    """The one launcher: `olives stage <stage>` in `n` processes under `torchrun --standalone`, on
    `settings` (the params as resolved here, a cell's overrides included) written to a
    temporary params file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={n}", "-m", "olives", "--params", str(path), "stage", stage]
        log.info("launching %s", " ".join(command))
        code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise LaunchError(f"torchrun with {n} processes exited with code {code}; see above")
