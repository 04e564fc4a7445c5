"""The registered MLflow model served over HTTP answers a real request carrying a PNG B-scan
with the same numbers as `olives predict`; evaluate tags it and gives it the champion alias."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_tiny_cache
from olives.cli import main
from olives.config import Params, from_dict
from olives.io import file_sha256
from olives.stages import evaluate, track, train
from test_training import LABELS, _relative_params, free_port

NAME = "olives-biomarkers"


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[Path, str]:
    """A tiny project trained and evaluated with tracking on (SQLite store)."""
    root = write_tiny_cache(tmp_path_factory.mktemp("serve"))
    uri = f"sqlite:///{root}/mlflow.db"
    cwd, env = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        params = from_dict(Params, {**_relative_params(), "evaluate": {"bootstrap": 20}})
        train.run(params)
        evaluate.run(params)
        track.run(params)
    finally:
        os.chdir(cwd)
        if env is None:
            del os.environ["MLFLOW_TRACKING_URI"]
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env
    return root, uri


def test_track_tags_the_version_and_names_it_champion(registered):
    from mlflow import MlflowClient

    _, uri = registered
    version = MlflowClient(uri).get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == "1"
    assert {"test_macro_auroc", "test_vip_phase1", "backbone"} <= set(version.tags)


def b_scan_png(path: Path) -> bytes:
    rng = np.random.default_rng(3)
    pixels = (rng.random((124, 128)) * 60).astype(np.uint8)
    pixels[40:60, :] += 150  # a bright band, like a retina
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_served_model_answers_http_like_olives_predict(registered, tmp_path, capsys):
    """The README's way: `olives request scan.png > request.json`, `curl -d @request.json`."""
    _, uri = registered
    b_scan_png(tmp_path / "scan.png")
    assert main(["request", str(tmp_path / "scan.png")]) == 0
    body = capsys.readouterr().out
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            served = pd.DataFrame(json.loads(reply.read())["predictions"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = tmp_path / "local.csv"
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        model = f"models:/{NAME}@champion"
        assert (
            main(["predict", str(tmp_path / "scan.png"), "--model", model, "--out", str(out)]) == 0
        )
    finally:
        if env_uri is None:
            del os.environ["MLFLOW_TRACKING_URI"]
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    local = pd.read_csv(out)
    for name in LABELS:
        assert served[f"{name}_prob"].item() == pytest.approx(
            local[f"{name}_prob"].item(), abs=1e-6
        )
        assert served[f"{name}_pred"].item() == local[f"{name}_pred"].item()
    assert served["BCVA_imputed"].item() == 1 == local["BCVA_imputed"].item()
    # One model identity: the served answer names the version and the file's SHA-256.
    root, _ = registered
    sha = file_sha256(root / "models/model.safetensors")
    assert served["model_version"].item() == f"{NAME}/1"
    assert served["model_sha256"].item() == sha


def wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            said = server.stderr.read().decode()[-2000:] if server.stderr else ""
            pytest.fail(f"mlflow models serve exited: {said}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the model server did not answer {url} within {seconds} s")
