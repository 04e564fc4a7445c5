"""`data.source: huggingface` without a reachable hub fails at once, in one line.

Before: the library retried each file with back-off (1 + 2 + 4 + 8 + 8 s of sleeps) and printed
each of its warnings twice (its own stderr handler and the root logger's), 25 lines over ~24 s
on a closed port. The stage runs in a fresh process, as under `dvc exp run`: the hub library
reads `HF_ENDPOINT` and `HF_HUB_OFFLINE` once, at import. The only address contacted is a
closed local port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olives.data import hub as sources
from olives.data.hub import check_hub_reachable
from olives.data.rows import SourceError

CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens on it here

# What the command line does around a stage: its log format, one ERROR line for bad input.
STAGE = """
import logging, sys
from olives.config import Params, from_dict
from olives.errors import InputError
from olives.stages import download
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
data = {"source": "huggingface", "raw_dir": sys.argv[1], "report": sys.argv[2]}
try:
    download.run(from_dict(Params, {"data": data}))
except InputError as exc:
    logging.getLogger("olives").error("%s: %s", type(exc).__name__, exc)
    sys.exit(1)
"""


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    src = str(Path(sources.__file__).parents[2])  # this checkout's src, first
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env | {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": CLOSED_PORT} | extra


def run_stage(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    args = [sys.executable, "-c", STAGE, str(tmp_path / "raw"), str(tmp_path / "report.json")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("offline", [False, True], ids=["closed endpoint", "HF_HUB_OFFLINE=1"])
def test_an_unreachable_hub_is_one_error_line_at_once(tmp_path, offline):
    env = hub_env(tmp_path, **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    done, seconds = run_stage(tmp_path, env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr  # no retry warning, nothing printed twice
    assert lines[0].startswith("ERROR olives: SourceError: Couldn't reach 'gOLIVES/OLIVES_Dataset'")
    assert "data.source: synthetic" in lines[0] and "data.local.path" in lines[0]
    assert ("offline mode" if offline else CLOSED_PORT) in lines[0]
    # The library's back-off alone slept 23 s; the stage, start-up included, takes ~1 s.
    assert seconds < 15, f"{seconds:.1f} s"
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_the_hub_libraries_log_through_the_root_handler_once(tmp_path):
    """Their own stderr handler plus the root's printed each warning twice (the control)."""
    script = """
import logging, sys
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
import datasets
from olives.data.hub import one_handler_for_hub_logs
if sys.argv[1] == "fixed":
    one_handler_for_hub_logs()
logging.getLogger("huggingface_hub.utils._http").warning("retrying in 1s")
logging.getLogger("datasets.load").warning("a datasets warning")
"""
    counts = {}
    for mode in ("control", "fixed"):
        args = [sys.executable, "-c", script, mode]
        done = subprocess.run(args, env=hub_env(tmp_path), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        counts[mode] = (
            done.stderr.count("retrying in 1s"),
            done.stderr.count("a datasets warning"),
        )
    assert counts == {"control": (2, 2), "fixed": (1, 1)}


def test_an_answer_from_the_hub_lets_load_dataset_report_it(monkeypatch):
    """Only a failed connection is "unreachable": a hub that answers (here 401, gated or
    private) leaves the error to `load_dataset`, whose messages are unchanged."""
    import huggingface_hub

    class Answered(Exception):
        """Stands for the library's HTTP error: neither a connection nor a timeout error."""

    def answers(self, repo_id, **kwargs):
        assert kwargs["timeout"] == sources.PROBE_TIMEOUT_S and kwargs["revision"] == "v1"
        raise Answered("401 Client Error")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", answers)
    assert check_hub_reachable("someone/private", "v1") is None


def test_a_refused_connection_is_the_offline_error(monkeypatch):
    import huggingface_hub

    def refused(self, repo_id, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", refused)
    with pytest.raises(SourceError, match=r"Couldn't reach 'a/b' .*Connection refused\)\. Offline"):
        check_hub_reachable("a/b", "main")


def test_a_folder_in_the_hub_layout_is_not_probed(tmp_path, monkeypatch):
    import huggingface_hub

    def never(self, repo_id, **kwargs):
        raise AssertionError("probed a local folder")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", never)
    check_hub_reachable(str(tmp_path), "main")
