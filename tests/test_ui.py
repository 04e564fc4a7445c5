"""`olives ui`: the link that opens the experiment's runs table, on the store every stage uses,
and the MLflow UI server behind it."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from olives.config import TrackingConfig
from olives.errors import InputError
from olives.tracking import ui
from olives.tracking.experiment import KIND, KIND_TAG, VIEW_TAG

ROUTE = "runs?workflowType=machine_learning&viewStateShareKey=olives-test-metrics"


@pytest.fixture()
def config(tmp_path, monkeypatch) -> TrackingConfig:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/store/mlflow.db", experiment="x")


def experiment_id(uri: str, name: str = "x") -> str:
    return MlflowClient(uri).get_experiment_by_name(name).experiment_id


def test_runs_url_opens_the_runs_table_of_the_experiment(config):
    url = ui.runs_url(config, "127.0.0.1", 5123)
    found = experiment_id(config.tracking_uri)
    assert url == f"http://127.0.0.1:5123/#/experiments/{found}/{ROUTE}"
    tags = MlflowClient(config.tracking_uri).get_experiment(found).tags
    assert tags[KIND_TAG] == KIND and VIEW_TAG in tags
    assert ui.runs_url(config, "127.0.0.1", 5123) == url  # once: the same experiment


def test_the_tracking_uri_variable_wins(config, tmp_path, monkeypatch):
    other = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    url = ui.runs_url(config, "0.0.0.0", 5000)
    assert url.startswith(f"http://127.0.0.1:5000/#/experiments/{experiment_id(other)}/runs?")
    assert not Path(config.tracking_uri.removeprefix("sqlite:///")).exists()


def test_addresses_a_browser_reaches():
    assert ui.base_url("::", 80) == "http://127.0.0.1:80"
    assert ui.base_url("::1", 5000) == "http://[::1]:5000"
    assert ui.base_url("example.org", 5000) == "http://example.org:5000"


def test_run_ui_logs_the_link_then_serves_the_store(config, monkeypatch, caplog):
    started = []

    class Server:
        def __init__(self, command):
            started.append(command)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(ui.subprocess, "Popen", Server)
    with caplog.at_level(logging.INFO):
        ui.run_ui(config, port=5124)
    found = experiment_id(config.tracking_uri)
    assert f"open http://127.0.0.1:5124/#/experiments/{found}/{ROUTE}" in caplog.text
    store = ["--backend-store-uri", config.tracking_uri, "--host", "127.0.0.1", "--port", "5124"]
    assert started == [[sys.executable, "-m", "mlflow", "ui", *store]]
    with pytest.raises(InputError, match=r"tracking\.enabled is false"):
        ui.run_ui(TrackingConfig(enabled=False))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, deadline: float) -> bytes:
    """The body at `url` once the server answers (it takes seconds to start)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_the_server_serves_the_ui_and_the_experiment_of_the_link(config, tmp_path):
    port = free_port()
    url = ui.runs_url(config, "127.0.0.1", port)
    command = ui.ui_command(config.tracking_uri, "127.0.0.1", port)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(command, cwd=tmp_path, **quiet)
    try:
        deadline = time.monotonic() + 120
        assert b"MLflow" in get(url.split("#")[0], deadline)  # the page the link opens
        api = (
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=x"
        )
        tags = json.loads(get(api, deadline))["experiment"]["tags"]
        assert {"key": KIND_TAG, "value": KIND} in tags
    finally:
        server.send_signal(signal.SIGINT)  # what Ctrl-C sends
        ui.stop(server, seconds=10)
    assert server.returncode is not None
