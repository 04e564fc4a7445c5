"""Resumable training: the state a checkpoint holds, and its atomic save and guarded load.

A checkpoint belongs to one run: its fingerprint hashes the parameters that change results
(never runtime knobs such as progress bars or threads) and the training and validation rows.
A checkpoint of another run is ignored with a warning, never resumed.

The file holds tensors and plain containers only (dicts, lists, numbers, strings) and is read
with `torch.load(weights_only=True)`: a file that is anything else (a foreign or hostile pickle,
a truncated write) is refused with a warning naming it and training starts afresh; no code in
it runs. It also names the MLflow run the training logs to, so an attempt that resumes a killed
one continues its run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
    """`path` (e.g. checkpoints/last.pt) for the run identified by `fingerprint`; `run_id`: the
    MLflow run it logs to (None: tracking off), saved with it."""

    path: Path
    fingerprint: str
    run_id: str | None = None

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
        saved = {
            "fingerprint": self.fingerprint,
            "run_id": self.run_id,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": dict(state.__dict__),
        }
        torch.save(_plain(saved, "checkpoint"), tmp)
        tmp.replace(self.path)

    def load(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> TrainState | None:
        """Restore model, optimizer and scheduler; None when there is nothing to resume."""
        saved = self._read()
        if saved is None:
            return None
        if saved["fingerprint"] != self.fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to other params or data", self.path)
            return None
        problem = _misfit(saved, model, optimizer)
        if problem:
            log.warning("ignoring checkpoint %s: %s; training starts afresh", self.path, problem)
            return None
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # half restored: stop
            raise RuntimeError(
                f"checkpoint {self.path} is this run's but cannot be restored ({exc}); delete it"
            ) from exc
        state = TrainState(**saved["state"])
        log.info("resumed from %s after epoch %d", self.path, state.epoch - 1)
        return state

    def saved_run_id(self) -> str | None:
        """The MLflow run a checkpoint of this run names (None: no such checkpoint)."""
        saved = self._read(quiet=True)
        if saved is None or saved["fingerprint"] != self.fingerprint:
            return None
        run_id = saved.get("run_id")
        return run_id if isinstance(run_id, str) else None

    def remove(self) -> None:
        """The run finished: a later run must not resume from it."""
        self.path.unlink(missing_ok=True)

    def _read(self, quiet: bool = False) -> dict[str, Any] | None:
        """The file's contents when it is a checkpoint made of plain data, else None (with a
        warning, unless `quiet`). `weights_only=True`: unpickling can build nothing else."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True, mmap=quiet)
        except Exception as exc:  # hostile or foreign pickle, truncated zip, ...: never resume
            reason = f"not a checkpoint of plain tensors ({(str(exc).splitlines() or [''])[0]})"
        else:
            reason = _malformed(saved)
        if reason:
            (log.debug if quiet else log.warning)(
                "ignoring checkpoint %s: %s; training starts afresh", self.path, reason
            )
            return None
        return saved


def _plain(value: Any, where: str) -> Any:
    """`value` as tensors and plain containers, which `weights_only=True` loads (numpy scalars
    and arrays converted); anything else is a TypeError naming where it sits."""
    if isinstance(value, torch.Tensor) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    for kind in (bool, int, float, str):  # subclasses (enums, ...) as their plain base
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where} is a {type(value).__name__}: a checkpoint holds plain data only")


def _malformed(saved: Any) -> str | None:
    """What makes `saved` no checkpoint of this program (None: it is one)."""
    if not isinstance(saved, dict):
        return f"holds a {type(saved).__name__}, not a dict"
    kinds = {"fingerprint": str, "model": dict, "optimizer": dict, "scheduler": dict, "state": dict}
    for key, kind in kinds.items():
        if not isinstance(saved.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}"
    unknown = set(saved["state"]) - {f.name for f in fields(TrainState)}
    if unknown or not isinstance(saved["state"].get("epoch"), int):
        return f"its training state has unknown fields {sorted(unknown)} or no epoch"
    return None


def _misfit(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """Why the saved weights or optimizer cannot go into these ('' when they fit)."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for name, weights in (("model", saved["model"]), ("best", saved["state"].get("best_weights"))):
        if weights is None and name == "best":
            continue
        if not isinstance(weights, dict) or set(weights) != set(shapes):
            return f"its {name} weights name other tensors than the model's"
        if any(not isinstance(v, torch.Tensor) or v.shape != shapes[k] for k, v in weights.items()):
            return f"its {name} weights have other shapes than the model's"
    groups = saved["optimizer"].get("param_groups")
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if not isinstance(groups, list) or [_size(g) for g in groups] != ours:
        return "its optimizer holds other parameter groups"
    return ""


def _size(group: Any) -> int:
    """How many parameters a saved optimizer group lists (-1: not a group)."""
    params = group.get("params") if isinstance(group, dict) else None
    return len(params) if isinstance(params, list) else -1
