"""The training loop on a toy cache: overfitting, exact resume, start-up checks, MLflow."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tiny_cache
from olives.config import Params, from_dict
from olives.loader import load_splits
from olives.tracking import Tracker, TrackingUnavailableError, resolve_tracking_uri
from olives.training import InitialLossError, Runtime, fit

CPU = Runtime(torch.device("cpu"))


def params(tmp: Path, **train) -> Params:
    return from_dict(
        Params,
        {
            "seed": 3,
            "preprocess": {"height": 32, "width": 32, "cache_dir": str(tmp / "data/cache")},
            "split": {"out_dir": str(tmp / "data/split")},
            "model": {"pretrained": "none", "fusion": "concat", "dropout": 0.0},
            "loss": {"name": "bce"},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "lr": 3e-3,
                "warmup_epochs": 0.0,
                "progress": False,
                "num_threads": 1,
                "patience": 10,
                "model_dir": str(tmp / "models"),
                "report_dir": str(tmp / "reports/train"),
                "checkpoint_dir": str(tmp / "checkpoints"),
                **train,
            },
            "tracking": {"enabled": False},
        },
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("tiny"))


def splits(root: Path) -> dict:
    return load_splits(
        root / "data/cache",
        root / "data/split",
        ("B1", "B2", "B3", "B4", "B5", "B6"),
        ("BCVA", "CST"),
    )


def test_tiny_subset_is_overfit_to_near_zero_loss(tiny):
    data = splits(tiny)
    subset = data["train"].__class__(
        images=data["train"].images,
        rows=data["train"].rows[:8],
        labels=data["train"].labels[:8],
        clinical=data["train"].clinical[:8],
        frame=data["train"].frame.iloc[:8],
    )
    cfg = params(tiny, epochs=40, lr=1e-2, augment={"enabled": False})
    result = fit(cfg, {"train": subset, "val": subset}, CPU)
    losses = [h["train_loss"] for h in result.state.history]
    assert losses[-1] < 0.05 < losses[0]
    assert result.state.history[-1]["val_macro_auroc"] > 0.9  # eval-mode BatchNorm


def test_resumed_run_ends_with_the_same_weights(tiny, tmp_path):
    data = splits(tiny)
    cfg = params(tiny, epochs=3)
    straight = fit(cfg, data, CPU).model.state_dict()

    checkpoint = tmp_path / "last.pt"

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, CPU, checkpoint, on_epoch=interrupt)
    assert torch.load(checkpoint, weights_only=False)["state"]["epoch"] == 2
    resumed = fit(cfg, data, CPU, checkpoint).model.state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_checkpoint_of_other_params_is_not_resumed(tiny, tmp_path):
    data = splits(tiny)
    checkpoint = tmp_path / "last.pt"
    fit(params(tiny, epochs=1), data, CPU, checkpoint)
    result = fit(params(tiny, epochs=1, lr=1e-3), data, CPU, checkpoint)
    assert len(result.state.history) == 1  # trained from scratch, not "already done"


def test_initial_loss_check_catches_a_wiring_bug(tiny, monkeypatch):
    from olives.models.fusion import BiomarkerNet

    monkeypatch.setattr(BiomarkerNet, "init_head_bias", lambda self, p: None)
    data = splits(tiny)
    data["train"].labels[:] = 1.0  # prevalence 1: logit 0 is far from the expected loss
    with pytest.raises(InitialLossError, match=r"train\.check_initial_loss"):
        fit(params(tiny, epochs=1), data, CPU)


def test_default_tracking_uri_is_sqlite_under_dvc_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    cfg = from_dict(Params, {}).tracking
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert resolve_tracking_uri(cfg) == "http://example.invalid:5000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_detected_before_training(tiny, monkeypatch):
    from olives.train_stage import run_train

    monkeypatch.chdir(tiny)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    cfg = from_dict(
        Params, {**json.loads(json.dumps(_relative_params())), "tracking": {"enabled": True}}
    )
    start = time.perf_counter()
    with pytest.raises(TrackingUnavailableError, match="unreachable"):
        run_train(cfg)
    assert time.perf_counter() - start < 30
    assert not (tiny / "models").exists()


def _relative_params() -> dict:
    return {
        "seed": 3,
        "preprocess": {"height": 32, "width": 32},
        "model": {"pretrained": "none"},
        "loss": {"name": "focal"},
        "train": {"epochs": 1, "batch_size": 8, "progress": False, "num_threads": 1},
    }


@pytest.fixture()
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 120 s")
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_training_against_a_real_mlflow_server(tiny, mlflow_server, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from olives.train_stage import run_train

    monkeypatch.chdir(tiny)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = from_dict(Params, {**_relative_params(), "tracking": {"experiment": "test-exp"}})
    metrics = run_train(cfg)

    run_id = json.loads((tiny / "reports/train/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.data.params["model.fusion"] == "concat"
    assert run.data.params["loss.name"] == "focal"
    assert run.data.tags["data_source"] == "synthetic"
    history = client.get_metric_history(run_id, "val_macro_auroc")
    assert len(history) == 1
    assert history[0].value == pytest.approx(metrics["val_macro_auroc"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "train")}
    assert {"train/thresholds.json", "train/learning_curves.png"} <= artifacts

    served = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    from olives.train_stage import serving_example

    example = torch.from_numpy(serving_example(splits(tiny)["val"]))
    bundle = torch.load(tiny / "models/model.pt", weights_only=False)
    from olives.models import model_from_description

    local = model_from_description(bundle["description"])
    local.load_state_dict(bundle["state_dict"])
    local.eval()
    with torch.no_grad():
        expected = torch.sigmoid(local(example[:, :1024].reshape(-1, 1, 32, 32), example[:, 1024:]))
        np.testing.assert_allclose(served(example).numpy(), expected.numpy(), rtol=1e-5)


def test_tracker_failure_mid_run_loses_nothing(tmp_path, caplog):
    tracker = Tracker(
        from_dict(Params, {"tracking": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}}).tracking
    )
    with tracker.run(run_name="x"):
        tracker.log_metrics({"ok": 1.0})
        tracker._call("log_metric", "bad", object())  # an MLflow error mid-run
        tracker.log_metrics({"after": 2.0})  # skipped, no exception
    assert "MLflow logging failed" in caplog.text
