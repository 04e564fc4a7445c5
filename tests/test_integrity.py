"""Integrity of what training leaves behind: a model file whose weights changed by one bit is
refused, a checkpoint is plain data (a hostile pickle never runs), and a killed `train` leaves
no MLflow run RUNNING: resumed, it continues its run; not resumed, the run is closed KILLED."""

from __future__ import annotations

import json
import logging
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import write_tiny_cache
from olives.cli import main
from olives.config import ModelConfig, Params, TrackingConfig, from_dict, select
from olives.models import BundleError, ModelBundle, build_model
from olives.stages import evaluate
from olives.stages import train as train_stage
from olives.tracking.provenance import process_alive, process_tag
from olives.tracking.runs import PROCESS_TAG, Tracker
from olives.training.checkpoint import Checkpoint, TrainState, fingerprint
from test_training import LABELS, params, run_fit, splits

CORRUPT = "weights do not match their recorded digest: the file is corrupt or was modified"

# ---------------------------------------------------------------- the model file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(pretrained="none", fusion="concat")
    bundle = ModelBundle(
        model=build_model(cfg, len(LABELS), 2, (32, 32)),
        labels=LABELS,
        clinical=("BCVA", "CST"),
        thresholds=(0.5,) * len(LABELS),
        clinical_stats={"BCVA": {"mean": 70.0, "std": 10.0}, "CST": {"mean": 300.0, "std": 60.0}},
        image_size=(32, 32),
    )
    return bundle.save(tmp_path_factory.mktemp("model"))


def header(path: Path) -> tuple[int, dict]:
    """The safetensors layout: (where the data starts, the JSON header)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return 8 + size, json.loads(raw[8 : 8 + size])


def flipped(source: Path, target: Path, position: int, bit: int) -> Path:
    data = bytearray(source.read_bytes())
    data[position] ^= 1 << bit
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return target


def test_an_intact_file_loads_without_a_warning(model_file, caplog):
    ModelBundle.load(model_file)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    _, layout = header(model_file)
    digest = json.loads(layout["__metadata__"]["olives"])["weights_sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize("draw", range(6))
def test_one_flipped_bit_in_any_weight_is_refused(model_file, tmp_path, draw):
    """Any tensor, any byte, any bit: the lowest mantissa bit changes a weight by 1e-7."""
    start, layout = header(model_file)
    tensors = sorted(k for k in layout if k != "__metadata__")
    rng = np.random.default_rng(draw)
    name = tensors[int(rng.integers(len(tensors)))] if draw else tensors[0]
    begin, end = layout[name]["data_offsets"]
    position = start + begin + int(rng.integers(end - begin))
    bit = int(rng.integers(8)) if draw else 0
    target = flipped(model_file, tmp_path / "models" / model_file.name, position, bit)
    with pytest.raises(BundleError) as caught:
        ModelBundle.load(target)
    assert str(caught.value) == f"{target}: {CORRUPT}; re-run `olives stage train`"
    assert "\n" not in str(caught.value)


def test_a_changed_recorded_digest_is_refused(model_file, tmp_path):
    start, layout = header(model_file)
    meta = json.loads(layout["__metadata__"]["olives"])
    digest = meta["weights_sha256"]
    raw = model_file.read_bytes()
    other = ("0" if digest[0] != "0" else "1") + digest[1:]  # same length: same layout
    target = tmp_path / "model.safetensors"
    target.write_bytes(raw[:start].replace(digest.encode(), other.encode()) + raw[start:])
    with pytest.raises(BundleError, match="recorded digest"):
        ModelBundle.load(target)


def test_an_older_file_without_a_digest_loads_with_one_warning(model_file, tmp_path, caplog):
    _, layout = header(model_file)
    meta = json.loads(layout["__metadata__"]["olives"])
    del meta["weights_sha256"]
    weights = ModelBundle.load(model_file).model.state_dict()
    old = tmp_path / "old.safetensors"
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(old), {"olives": json.dumps(meta)}
    )
    caplog.clear()
    bundle = ModelBundle.load(old)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(old) in warnings[0] and "\n" not in warnings[0]
    assert bundle.labels == LABELS


def test_evaluate_and_predict_stop_on_a_corrupt_model(model_file, tmp_path, caplog):
    start, _ = header(model_file)
    corrupt = flipped(model_file, tmp_path / "models/model.safetensors", start + 5, 0)
    cfg = from_dict(
        Params,
        {
            "train": {"model_dir": str(corrupt.parent)},
            "evaluate": {"out_dir": str(tmp_path / "reports")},
            "tracking": {"enabled": False},
        },
    )
    with pytest.raises(BundleError, match="recorded digest"):
        evaluate.run(cfg)
    assert not (tmp_path / "reports").exists()

    scan = tmp_path / "scan.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(scan)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(scan), "--model", str(corrupt), "--out", str(out)]) == 1
    assert not out.exists()
    assert f"{corrupt}: {CORRUPT}" in caplog.text


# ---------------------------------------------------------------- checkpoints


class RunsCode:
    """Unpickled by a plain pickle loader, this creates `marker`: code from the file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_files(folder: Path, key: str) -> list[Path]:
    """A torch zip file and a bare pickle, both with a payload that runs code on load."""
    marker = folder / "code-ran"
    as_torch = folder / "torch.pt"
    torch.save({"fingerprint": key, "model": RunsCode(marker), "state": {"epoch": 1}}, as_torch)
    as_pickle = folder / "pickle.pt"
    as_pickle.write_bytes(pickle.dumps({"fingerprint": key, "model": RunsCode(marker)}))
    return [as_torch, as_pickle]


def test_the_hostile_payload_is_live(tmp_path):
    """The files below do run code when read as pickles: what the checkpoint loader refuses."""
    as_torch, as_pickle = hostile_files(tmp_path, "k")
    torch.load(as_torch, weights_only=False)
    assert (tmp_path / "code-ran").exists()
    (tmp_path / "code-ran").unlink()
    pickle.loads(as_pickle.read_bytes())
    assert (tmp_path / "code-ran").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_hostile_checkpoint_is_refused_and_training_starts_afresh(tiny, tmp_path, caplog):
    data = splits(tiny)
    cfg = params(tiny, epochs=1)
    key = fingerprint(select(cfg, train_stage.PARAMS), data["train"].rows, data["val"].rows)
    for path in hostile_files(tmp_path, key):
        caplog.clear()
        result = run_fit(cfg, data, path)
        assert not (tmp_path / "code-ran").exists()
        assert f"ignoring checkpoint {path}" in caplog.text
        assert "resumed from" not in caplog.text
        assert [h["epoch"] for h in result.state.history] == [0]


def test_a_truncated_or_misfitting_checkpoint_is_ignored(tiny, tmp_path, caplog):
    data = splits(tiny)
    cfg = params(tiny, epochs=1)
    path = tmp_path / "last.pt"
    run_fit(cfg, data, path)  # a complete, valid checkpoint after epoch 0
    saved = torch.load(path, weights_only=True)
    key, first = saved["fingerprint"], next(iter(saved["model"]))
    variants = {
        "truncated": path.read_bytes()[: path.stat().st_size // 2],
        "other shapes": {**saved, "model": {**saved["model"], first: torch.zeros(3, 3, 3)}},
        "unknown state": {**saved, "state": {**saved["state"], "surprise": 1}},
        "no dict": [key],
    }
    for what, content in variants.items():
        broken = tmp_path / f"{what}.pt"
        if isinstance(content, bytes):
            broken.write_bytes(content)
        else:
            torch.save(content, broken)
        model = build_model(cfg.model, len(LABELS), 2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
        caplog.clear()
        assert Checkpoint(broken, key).load(model, optimizer, scheduler) is None, what
        assert f"ignoring checkpoint {broken}" in caplog.text, what
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, before[name]), what


def test_checkpoints_hold_plain_data_only(tmp_path):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    record = {"epoch": np.int64(0), "val_loss": np.float64(0.5), "curve": np.arange(3.0)}
    state = TrainState(epoch=1, best_score=np.float32(0.7), history=[record])
    checkpoint = Checkpoint(tmp_path / "last.pt", "key", run_id="abc")
    checkpoint.save(model, optimizer, scheduler, state)
    saved = torch.load(checkpoint.path, weights_only=True)
    (logged,) = saved["state"]["history"]
    assert type(logged["val_loss"]) is float and type(logged["epoch"]) is int
    assert torch.equal(logged["curve"], torch.arange(3.0, dtype=torch.float64))
    assert checkpoint.saved_run_id() == "abc"
    assert Checkpoint(checkpoint.path, "other key").saved_run_id() is None

    state.history.append({"epoch": 1, "odd": object()})
    with pytest.raises(TypeError, match=r"checkpoint\.state\.history\[1\]\.odd"):
        checkpoint.save(model, optimizer, scheduler, state)


# ---------------------------------------------------------------- killed runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("tiny"), n_patients=8, per_patient=5)


def stage_params(**train) -> dict:
    """The train stage run in a tiny project (relative paths), 2 epochs, a quick MLflow run."""
    return {
        "seed": 3,
        "preprocess": {"height": 32, "width": 32},
        "model": {"pretrained": "none", "fusion": "concat"},
        "loss": {"name": "bce"},
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "num_threads": 1, **train},
        "tracking": {"experiment": "kills", "log_model": False, "registered_model": None},
    }


KILL_AFTER_FIRST_EPOCH = """
import json, os, signal, sys
from olives.config import Params, from_dict
from olives.stages import train
from olives.tracking.runs import Tracker

log = Tracker.log_metrics
def log_then_die(self, metrics, step=None, model_id=None):
    log(self, metrics, step=step, model_id=model_id)
    if step == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no finally: a real kill
Tracker.log_metrics = log_then_die
train.run(from_dict(Params, json.loads(sys.argv[1])))
"""


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    root = write_tiny_cache(tmp_path / "project", n_patients=8, per_patient=5)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return root


def killed_train(root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, json.dumps(stage_params())],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def runs(status: str | None = None) -> list:
    tracker = Tracker(TrackingConfig(experiment="kills"))
    client = tracker.client()
    experiment = client.get_experiment_by_name("kills")
    found = client.search_runs([experiment.experiment_id])
    return [r for r in found if status is None or r.info.status == status]


def epochs_logged(run_id: str) -> list[int]:
    client = Tracker(TrackingConfig(experiment="kills")).client()
    return sorted(m.step for m in client.get_metric_history(run_id, "val_macro_auroc"))


def test_a_killed_train_is_continued_by_the_next_one(project):
    killed_train(project)
    (killed,) = runs("RUNNING")
    checkpoint = project / "checkpoints/last.pt"
    assert torch.load(checkpoint, weights_only=True)["run_id"] == killed.info.run_id

    train_stage.run(from_dict(Params, stage_params()))
    (run,) = runs()
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert epochs_logged(run.info.run_id) == [0, 1]  # each epoch once
    assert "model_sha256" in run.data.tags and not checkpoint.exists()


def test_a_killed_run_that_is_not_resumed_is_closed_killed(project):
    killed_train(project)
    train_stage.run(from_dict(Params, stage_params(lr=1e-3)))  # other params: no resume
    by_status = {r.info.status: r for r in runs()}
    assert set(by_status) == {"KILLED", "FINISHED"}
    assert epochs_logged(by_status["KILLED"].info.run_id) == [0]
    assert epochs_logged(by_status["FINISHED"].info.run_id) == [0, 1]


def test_an_exception_after_a_checkpoint_then_a_resume_leaves_one_complete_run(
    project, monkeypatch
):
    """The second epoch's checkpoint is written, its metrics never logged: the resumed run
    logs them (nothing is left to train)."""
    log = Tracker.log_metrics

    def fail_at_second_epoch(self, metrics, step=None, model_id=None):
        if step == 1:
            raise RuntimeError("interrupted")
        log(self, metrics, step=step, model_id=model_id)

    with monkeypatch.context() as patch:
        patch.setattr(Tracker, "log_metrics", fail_at_second_epoch)
        with pytest.raises(RuntimeError, match="interrupted"):
            train_stage.run(from_dict(Params, stage_params()))
    assert [r.info.status for r in runs()] == ["FAILED"]
    train_stage.run(from_dict(Params, stage_params()))
    (run,) = runs()
    assert run.info.status == "FINISHED" and epochs_logged(run.info.run_id) == [0, 1]


def dead_process_tag() -> str:
    code = "from olives.tracking.provenance import process_tag; print(process_tag())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_only_runs_of_dead_processes_on_this_machine_are_closed(tmp_path):
    """Experiments side by side (`dvc queue start -j 2`) must never close each other's runs."""
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db", experiment="e"))
    me = process_tag()
    host, boot, pid, start = me.rsplit("/", 3)
    owners = {
        "dead": dead_process_tag(),
        "rebooted": f"{host}/{boot}-before/{pid}/{start}",
        "pid reused": f"{host}/{boot}/{pid}/{int(start or 0) + 1}",
        "alive": me,
        "other machine": f"elsewhere.invalid/{boot}/1/1",
        "unreadable": "???",
        "untagged": None,
    }
    with tracker.run(run_name="setup"):
        pass
    client = tracker.client()
    experiment = client.get_experiment_by_name("e").experiment_id
    ids = {}
    for what, owner in owners.items():
        ids[what] = client.create_run(experiment, run_name=what).info.run_id
        if owner:
            client.set_tag(ids[what], PROCESS_TAG, owner)
    assert not process_alive(owners["dead"]) and process_alive(me)
    closed = tracker.close_abandoned(keep=None)
    assert sorted(closed) == sorted(ids[w] for w in ("dead", "rebooted", "pid reused"))
    status = {w: client.get_run(i).info.status for w, i in ids.items()}
    assert status == {
        **dict.fromkeys(("dead", "rebooted", "pid reused"), "KILLED"),
        **dict.fromkeys(("alive", "other machine", "unreadable", "untagged"), "RUNNING"),
    }
    assert tracker.close_abandoned(keep=None) == []
