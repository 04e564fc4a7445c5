"""Run a stage under `torchrun --standalone` with the same params: what a stage does when
`train.nproc_per_node` > 1 and it was not started by torchrun itself."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from olives.config import Params, to_dict
from olives.errors import InputError

log = logging.getLogger(__name__)


class LaunchError(InputError):
    """torchrun (started by the stage) failed; its processes printed why."""


def needs_launch(params: Params) -> bool:
    """Several processes asked for, and this is not one of them yet."""
    return params.train.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ


def torchrun(params: Params, stage: str) -> None:
    """`olives <stage>` in `train.nproc_per_node` processes on the params as resolved here (a
    cell's overrides included), through a temporary params file."""
    n = params.train.nproc_per_node
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={n}", "-m", "olives", "--params", str(path), stage]
        log.info("launching %s", " ".join(command))
        code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise LaunchError(f"torchrun with {n} processes exited with code {code}; see above")
