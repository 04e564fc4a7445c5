"""Provenance: what a run came from (the commit, the data hashes in dvc.lock) and which process
writes it.

All of it is read from the stage's own working tree (`work_tree`), never from the MLflow
store's root (`olives.tracking.runs.project_root`): in `dvc exp run --queue/--temp` the two differ,
the stage runs in the experiment's copy under `.dvc/tmp/exps/` whose dvc.lock and data are that
experiment's, while the store stays with the original repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def work_tree() -> Path:
    """The tree this stage runs in, whose `dvc.lock`, data and commit are the run's provenance:
    the process's working folder. DVC runs each stage command in the folder of its `dvc.yaml`,
    which is the experiment's own copy under `.dvc/tmp/exps/` in a queued run, and every path
    in params.yaml is relative to it."""
    return Path.cwd().resolve()


def run_git(args: list[str], cwd: Path) -> str | None:
    """`git <args>` in `cwd`: its output, or None when git fails (no git, not a repository)."""
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10, cwd=cwd
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The commit checked out in the work tree (a queued experiment's base commit)."""
    return run_git(["rev-parse", "HEAD"], work_tree())


def dvc_hash(path: str) -> str | None:
    """The md5 of output `path` as recorded in the work tree's dvc.lock (the data this run
    trained on). For a file, its own md5 (what DVC 3 records) wins when the lock disagrees or is
    silent: the stage was re-run outside DVC and the lock is stale."""
    recorded = _locked_md5(work_tree() / "dvc.lock", path)
    target = work_tree() / path
    if not target.is_file():
        return recorded
    actual = _md5(target)
    if recorded is not None and recorded != actual:
        log.warning("dvc.lock is stale for %s: tagging the file's own md5", path)
    return actual


def _locked_md5(lock: Path, path: str) -> str | None:
    if not lock.is_file():
        return None
    import yaml

    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def process_tag(pid: int | None = None) -> str:
    """`host/boot/pid/start` of a process (this one by default): which process writes a run.
    Boot id and start time (Linux) tell a reused pid or a reboot from the original process."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_time(pid) or ''}"


def process_alive(tag: str) -> bool:
    """False only when the process `tag` names is surely gone: it ran on this machine and the
    machine rebooted, or its pid is free or now belongs to a later process. A process of
    another machine, or a tag this function cannot read, counts as alive."""
    host, boot, pid, start = (["", "", "", "", *tag.rsplit("/", 3)])[-4:]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if boot and _boot_id() and boot != _boot_id():
        return False
    if start:
        return _start_time(int(pid)) == start
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (ticks after boot); None without /proc, or when no such
    process runs (absent, or a zombie: dead, not yet reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]
