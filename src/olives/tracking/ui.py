"""`olives ui`: the MLflow UI on the project's store, opened on the runs table with the test
metrics.

The link (`runs_url`) is MLflow 3.17's hash route of the experiment's runs tab,
`#/experiments/<id>/runs`, with two query parameters the UI reads: `workflowType=machine_learning`
(without it 3.17 shows the GenAI sidebar and its experiment page opens on the overview of traces)
and `viewStateShareKey=<VIEW>`, the saved view of `olives.tracking.experiment` whose columns are
the test metrics (MLflow's default runs table shows none). The store is the one every stage
writes to (`resolve_tracking_uri`: `MLFLOW_TRACKING_URI`, then `tracking.tracking_uri`, then the
project's `mlflow.db`). A store that is a server already serves its UI: its link is printed and
nothing is started.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from urllib.parse import urlencode

from olives.config import TrackingConfig
from olives.errors import InputError
from olives.tracking.experiment import VIEW, WORKFLOW, prepare
from olives.tracking.runs import check_reachable, create_store, resolve_tracking_uri

log = logging.getLogger(__name__)

ANY_ADDRESS = {"", "0.0.0.0", "::"}  # a server listening everywhere is reached on localhost


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def base_url(host: str, port: int) -> str:
    """`http://127.0.0.1:5000`: where a browser on this machine reaches the server."""
    host = "127.0.0.1" if host in ANY_ADDRESS else host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{port}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs table of the experiment, as a model-training experiment, with the saved view."""
    query = urlencode({"workflowType": WORKFLOW, "viewStateShareKey": VIEW})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def runs_url(config: TrackingConfig, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The link that opens the experiment's runs table on the UI at `host:port` (on the store's
    own server when the store is one); the experiment is created, and tagged, when missing."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(config)
    if uri.startswith("sqlite:///"):
        create_store(uri, config.experiment)
    else:
        check_reachable(uri)  # seconds, not MLflow's minutes of retries
    experiment_id = prepare(MlflowClient(uri), config.experiment)
    return experiment_url(uri if is_server(uri) else base_url(host, port), experiment_id)


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """`python -m mlflow ui` of this environment on the store `uri`."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]


def run_ui(config: TrackingConfig, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Start the MLflow UI on the project's store and serve it until Ctrl-C; the link to the
    runs table is logged first. Raises InputError when the server stops on its own."""
    if not config.enabled:
        raise InputError("tracking.enabled is false: there is no MLflow store to show")
    uri = resolve_tracking_uri(config)
    url = runs_url(config, host, port)
    if is_server(uri):
        log.info("the MLflow store is the server %s: open %s", uri, url)
        return
    log.info("MLflow UI on %s: open %s (Ctrl-C stops it)", uri, url)
    process = subprocess.Popen(ui_command(uri, host, port))
    try:
        code = process.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server too
        stop(process)
        return
    if code != 0:
        raise InputError(f"mlflow ui stopped with exit code {code}: is port {port} free?")


def stop(process: subprocess.Popen, seconds: float = 10.0) -> None:
    """Let the server end on the SIGINT it got, then terminate, then kill it."""
    for end in (None, process.terminate, process.kill):
        if end is not None:
            end()
        try:
            process.wait(timeout=seconds)
            return
        except subprocess.TimeoutExpired:
            continue
