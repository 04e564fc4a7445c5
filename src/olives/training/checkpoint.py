"""Resumable training: the state a checkpoint holds, and its atomic save and guarded load.

A checkpoint belongs to one run: its fingerprint hashes the parameters that change results
(never runtime knobs such as progress bars or threads) and the training and validation rows.
A checkpoint of another run is ignored with a warning, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


FILE = "last.pt"  # the one checkpoint in `train.checkpoint_dir` / `pretrain.checkpoint_dir`


@dataclass
class TrainState:
    """Everything besides model, optimizer and scheduler that resuming needs."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None


def fingerprint(result_params: dict[str, Any], *rows: np.ndarray) -> str:
    """What a checkpoint must match to be resumed: parameters and the rows trained on."""
    digest = hashlib.sha1(json.dumps(result_params, sort_keys=True).encode())
    for part in rows:
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """`path` (e.g. checkpoints/last.pt) for the run identified by `fingerprint`."""

    path: Path
    fingerprint: str

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainState,
    ) -> None:
        """Atomic write (tmp + rename): an interruption never leaves a half-written file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(
            {
                "fingerprint": self.fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state.__dict__,
            },
            tmp,
        )
        tmp.replace(self.path)

    def load(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> TrainState | None:
        """Restore model, optimizer and scheduler; None when there is nothing to resume."""
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        if saved["fingerprint"] != self.fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to other params or data", self.path)
            return None
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(**saved["state"])
        log.info("resumed from %s after epoch %d", self.path, state.epoch - 1)
        return state

    def remove(self) -> None:
        """The run finished: a later run must not resume from it."""
        self.path.unlink(missing_ok=True)
