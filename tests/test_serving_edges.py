"""The served MLflow model under a hostile client: it reads only what it is sent (no server
file unless `OLIVES_SERVE_ROOT`, then only regular files inside it), answers every row in
strict JSON, names unknown columns, never leaks a traceback or a server path, and keeps its
memory bounded. One `mlflow models serve` per module; the confinement rules are checked on
the same model loaded in-process (a second server would cost a minute)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, write_tiny_cache
from olives.config import Params, from_dict
from olives.data.decode import DEFAULT_LIMITS
from olives.stages import track, train
from test_serving import NAME, wait_for
from test_training import _relative_params, free_port

MODEL = f"models:/{NAME}/1"
MB = 1 << 20
CAP = DEFAULT_LIMITS.max_bytes


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """A tiny model trained with tracking on: version 1 of the registered model."""
    root = write_tiny_cache(tmp_path_factory.mktemp("edges"))
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        params = from_dict(Params, _relative_params())
        train.run(params)
        track.run(params)  # logs and registers the model, as after `dvc repro`
    return root, uri


@pytest.fixture(scope="module")
def server(trained) -> Any:
    """`mlflow models serve` as a user starts it (no `OLIVES_SERVE_ROOT`)."""
    root, uri = trained
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # uvicorn
    env = {k: v for k, v in os.environ.items() if k != "OLIVES_SERVE_ROOT"}
    env |= {"MLFLOW_TRACKING_URI": uri, "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with open(root / "server.log", "wb") as log_file:
        proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc)
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/invocations", proc=proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def loaded(trained) -> Any:
    """The registered pyfunc loaded in this process, as the server loads it."""
    import mlflow.pyfunc

    _, uri = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("OLIVES_SERVE_ROOT", raising=False)
        return mlflow.pyfunc.load_model(MODEL)


def png(seed: int = 0, shape: tuple[int, int] = (64, 72)) -> bytes:
    pixels = (np.random.default_rng(seed).random(shape) * 200).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def huge_png(side: int = 13000) -> bytes:
    """A 16-bit grey PNG whose header says side x side pixels, with a few bytes of pixel data:
    the header alone would cost a decoder gigabytes."""
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(bytes(4096))), (b"IEND", b"")]
    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        out += (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )
    return out


def strict(text: str) -> Any:
    """JSON as a strict parser reads it: NaN / Infinity are refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def post(url: str, body: Any, content_type: str = "application/json") -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def leaks(text: str, *secrets: str | Path) -> list[str]:
    """What of the server's insides an answer shows: a traceback, the venv, source paths."""
    marks = ["Traceback", "site-packages", ".venv", 'File "', sys.prefix, str(REPO), *secrets]
    return [str(m) for m in marks if str(m) in text]


def rows(server: Any, records: list[dict[str, Any]], *secrets: str | Path) -> list[dict]:
    """POST `dataframe_records`; the answer's rows, checked: 200, strict JSON, one row per
    record, nothing leaked, error rows without numbers, good rows with 0/1 decisions."""
    status, text = post(server.url, {"dataframe_records": records})
    assert status == 200, text[:2000]
    assert not leaks(text, *secrets), text[:2000]
    answer = strict(text)["predictions"]
    assert len(answer) == len(records)
    for row in answer:
        check_row(row)
    return answer


def check_row(row: dict[str, Any]) -> None:
    probs = [v for k, v in row.items() if k.endswith("_prob")]
    decisions = [v for k, v in row.items() if k.endswith("_pred")]
    assert "error" in row and "warning" in row and probs and decisions
    if row["error"] is None:
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs), row
        assert all(type(d) is int and d in (0, 1) for d in decisions), row
    else:
        assert isinstance(row["error"], str) and row["error"], row
        assert all(v is None for v in probs + decisions), row


def one_error(server: Any, record: dict[str, Any], *secrets: str | Path) -> str:
    (row,) = rows(server, [record], *secrets)
    assert row["error"], row
    return row["error"]


# --- over HTTP, the server as users start it ---------------------------------------------


def test_server_files_are_never_read(server, trained, tmp_path):
    root, _ = trained
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    folder = tmp_path / "d.png"
    folder.mkdir()
    stored = root / "scan.png"
    stored.write_bytes(png())
    hostile = ["/etc/shadow", "/etc/hostname", "/dev/zero", "/no/such/file.png", str(fifo)]
    hostile += [str(folder), str(stored), "../../etc/passwd", "scan.png", "a/../../etc/hostname"]
    answers = {p: one_error(server, {"path": p}, root, tmp_path) for p in hostile}
    # the same words whether the file exists, is a device, a FIFO or a folder: no oracle
    assert set(answers.values()) == {
        "row 0: reading server files is disabled; send the image as base64 in 'image'"
    }


def test_hostile_rows_never_fail_the_batch_nor_grow_the_server(server):
    (good,) = rows(server, [{"image": b64(png())}])  # warm: the model has run once
    assert good["error"] is None
    before = peak_memory(server.proc.pid)
    huge = b64(huge_png())
    answer = rows(server, [{"image": huge}] * 4 + [{"image": b64(png())}])
    assert all(row["error"] for row in answer[:4]) and answer[4]["error"] is None
    assert all("row" in row["error"] and "pixel" in row["error"] for row in answer[:4])
    one_error(server, {"path": "/dev/zero"})
    grown = peak_memory(server.proc.pid) - before
    assert grown < 300 * MB, f"the server grew by {grown / MB:.0f} MB"


def peak_memory(pid: int) -> int:
    """Sum of the peak resident memory (VmHWM) of `pid` and its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")), 0)
        total += int(kb) * 1024
    return total


@pytest.mark.parametrize(
    ("column", "suggestion"),
    [
        ("Image", "image"),
        ("IMAGE", "image"),
        ("img", "image"),
        ("bcva", "BCVA"),
        ("cst ", "CST"),
        ("patient_age", None),
    ],
)
def test_an_unknown_column_is_named_in_every_row(server, column, suggestion):
    guess = f"; did you mean {suggestion!r}?" if suggestion else ""
    records = [{column: b64(png())}, {"image": b64(png(1)), column: 1.0}]
    for row in rows(server, records):
        assert (
            f"unknown column {column!r}{guess} (expected: image, path, BCVA, CST)" in row["error"]
        )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"dataframe_records": [{}]}, "row 0: neither 'image' nor 'path' given"),
        ({"inputs": {}}, "row 0: neither 'image' nor 'path' given"),
        ({"inputs": [1, 2]}, "unknown column '0'"),
        ({"dataframe_records": [{"image": 5}]}, "row 0: 'image' must be base64 text, got int"),
        ({"dataframe_records": [{"image": "no base64!"}]}, "row 0: 'image' is not base64 text"),
        ({"dataframe_records": [{"image": b64(png()), "BCVA": "abc"}]}, "'BCVA' is 'abc', not"),
        ({"dataframe_records": [{"image": b64(png()), "path": "x.png"}]}, "not both"),
        (
            {"dataframe_split": {"columns": ["image", "image"], "data": [["a", "b"]]}},
            "column 'image' appears more than once",
        ),
    ],
)
def test_empty_and_odd_requests_answer_error_rows(server, body, words):
    status, text = post(server.url, body)
    assert status == 200 and not leaks(text), text[:2000]
    answer = strict(text)["predictions"]
    assert answer and all(words in row["error"] for row in answer), answer
    for row in answer:
        check_row(row)


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": []},
        {"dataframe_split": {"columns": [], "data": []}},
        {"dataframe_split": {"columns": ["image", "BCVA"], "data": []}},
        {"inputs": []},
    ],
)
def test_an_empty_request_answers_no_row(server, body):
    """A client mapping answers to rows by position gets no row it did not send."""
    status, text = post(server.url, body)
    assert status == 200 and not leaks(text), text[:2000]
    assert strict(text) == {"predictions": []}


@pytest.mark.parametrize("depth", [100_000, 2_000])
def test_json_nested_too_deeply_gets_a_json_400(server, depth):
    """MLflow's parser raises RecursionError past ~1000 levels; the model's loading wraps it,
    so the answer is MLflow's JSON 400, not a plain-text 500."""
    body = b'{"dataframe_records": ' + b"[" * depth + b"]" * depth + b"}"
    status, text = post(server.url, body)
    assert status == 400 and not leaks(text), text[:2000]
    answer = strict(text)
    assert answer["error_code"] == "BAD_REQUEST" and "nested too deeply" in answer["message"]
    (good,) = rows(server, [{"image": b64(png())}])  # the server goes on answering
    assert good["error"] is None


@pytest.mark.parametrize(
    ("record", "column"),
    [({"BCVA": 1e308}, "BCVA"), ({"CST": 1e39}, "CST"), ({"CST": -500}, "CST")],
)
def test_implausible_clinical_values_are_error_rows(server, record, column):
    good = {"image": b64(png()), "BCVA": 70.0, "CST": 300.0}
    answer = rows(server, [good, {**good, **record}, good])
    assert answer[0]["error"] is None and answer[2]["error"] is None
    assert answer[1]["error"].startswith("row 1") and column in answer[1]["error"]
    assert answer[0] == answer[2]


def test_a_mixed_batch_answers_each_row_for_itself(server):
    data = png(3)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buffer, format="PNG")
    black = buffer.getvalue()
    records = [
        {"image": b64(data), "BCVA": 60.0},
        {"image": "%%%"},
        {"path": "/etc/hostname"},
        {"image": b64(b"not an image")},
        {"image": b64(data), "BCVA": None, "CST": 350},
        {"image": b64(black)},
    ]
    answer = rows(server, records)
    assert [row["error"] is None for row in answer] == [True, False, False, False, True, True]
    assert [row["error"][:5] for row in answer[1:4]] == ["row 1", "row 2", "row 3"]
    assert answer[0]["BCVA_imputed"] == 0 and answer[4]["BCVA_imputed"] == 1
    assert answer[0]["warning"] is None and answer[5]["warning"]  # a constant image: no signal


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"dataframe_split": 5}',
        b'{"dataframe_records": [',
        b"[1, 2]",
        b"\xff\xfe",
        b'{"dataframe_records": {"a": 1}}',
        b'{"dataframe_split": {"columns": ["image"], "data": [[1, 2]]}}',
        b'{"dataframe_records": [], "inputs": {}}',
    ],
)
def test_malformed_json_bodies_get_a_json_400_without_a_traceback(server, body):
    status, text = post(server.url, body)
    assert status == 400, text[:2000]
    assert strict(text)["error_code"] == "BAD_REQUEST"
    assert not leaks(text), text[:2000]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'a,b\n1,2,3\n"x', "text/csv"), (b"PAR1xx", "application/vnd.apache.parquet")],
)
def test_malformed_csv_and_parquet_bodies(server, body, content_type):
    status, text = post(server.url, body, content_type)
    assert status == 400 and not leaks(text), text[:2000]


# --- in-process: the rules behind the answers ---------------------------------------------


def frame_rows(answer: pd.DataFrame) -> list[dict[str, Any]]:
    """The answer as MLflow's scoring server writes it, read back strictly."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    buffer = io.StringIO()
    predictions_to_json(answer, buffer)
    rows_ = strict(buffer.getvalue())["predictions"]
    for row in rows_:
        check_row(row)
    return rows_


@pytest.mark.parametrize(
    "frame", [pd.DataFrame(), pd.DataFrame(columns=["image", "BCVA"]), pd.DataFrame({"x": []})]
)
def test_an_empty_frame_answers_no_row_in_process(loaded, frame):
    answer = loaded.predict(frame)
    assert len(answer) == 0 and "error" in answer.columns
    assert frame_rows(answer) == []


def test_the_model_is_logged_without_an_input_schema_and_decodes_with_few_threads(loaded):
    assert loaded.metadata.get_input_schema() is None  # MLflow would drop unknown columns
    assert {c.name for c in loaded.metadata.get_output_schema().inputs} >= {"B1_prob", "error"}
    assert loaded.unwrap_python_model().predictor.decode_threads == 2


@pytest.fixture()
def served_root(loaded, tmp_path) -> tuple[Any, Path]:
    """The loaded model reading files under `tmp_path/root` (as with `OLIVES_SERVE_ROOT`)."""
    model = loaded.unwrap_python_model()
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "good.png").write_bytes(png(5))
    (root / "sub" / "good.png").write_bytes(png(5))
    (root / "empty.png").write_bytes(b"")
    (root / "d.png").mkdir()
    os.mkfifo(root / "fifo.png")
    with open(root / "big.png", "wb") as handle:  # sparse: no disk, no memory
        handle.truncate(CAP + 1)
    (tmp_path / "outside.png").write_bytes(png(5))
    links = {
        "link_in.png": root / "good.png",
        "link_out.png": tmp_path / "outside.png",
        "link_gone.png": tmp_path / "gone.png",
        "etc": Path("/etc"),
        "loop.png": root / "loop.png",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    previous = model.root
    model.root = root
    yield loaded, root
    model.root = previous


def ask(loaded: Any, paths: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    """Predict on `path` rows in a thread: a FIFO opened by mistake would block forever."""
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: box.update(out=loaded.predict(pd.DataFrame({"path": paths}))),
        daemon=True,
    )
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "predict blocked (a FIFO or device was opened?)"
    return frame_rows(box["out"])


def test_served_files_stay_inside_the_root_and_are_regular(served_root, tmp_path):
    loaded, root = served_root
    expected = {
        "good.png": None,
        "sub/good.png": None,
        "link_in.png": None,
        "../outside.png": "is not allowed: give it relative to OLIVES_SERVE_ROOT, no '..'",
        "sub/../good.png": "is not allowed",
        "/etc/hostname": "is absolute: give it relative to OLIVES_SERVE_ROOT",
        str(tmp_path / "outside.png"): "is absolute",
        "link_out.png": "leads outside OLIVES_SERVE_ROOT or cannot be resolved",
        "link_gone.png": "leads outside OLIVES_SERVE_ROOT",
        "etc/hostname": "leads outside OLIVES_SERVE_ROOT",
        "fifo.png": "is not a regular file",
        "d.png": "is not a regular file",
        "empty.png": "is an empty file",
        "big.png": f"is {CAP + 1} bytes, over the limit of {CAP} bytes",
        "missing.png": "is not found in the served folder",
        "loop.png": "cannot be",
    }
    answer = ask(loaded, list(expected))
    for (path, words), row in zip(expected.items(), answer, strict=True):
        if words is None:
            assert row["error"] is None, (path, row)
        else:
            assert row["error"].startswith("row ") and words in row["error"], (path, row)
    good = [row for row in answer if row["error"] is None]
    assert good[0] == good[1] == good[2]  # the same scan, whichever way it was reached
    for path, row in zip(expected, answer, strict=True):  # nothing but what was sent
        assert not leaks(json.dumps(row).replace(repr(path), ""), root, tmp_path), row


def test_outside_paths_give_the_same_words_whether_they_exist_or_not(served_root):
    loaded, _ = served_root
    pairs = [("/etc/hostname", "/etc/no-such-file"), ("link_out.png", "link_gone.png")]
    pairs += [("../outside.png", "../gone.png"), ("etc/hostname", "etc/no-such-file")]
    for there, absent in pairs:
        first, second = ask(loaded, [there, absent])
        assert first["error"].replace(f"row 0: path {there!r}", "") == second["error"].replace(
            f"row 1: path {absent!r}", ""
        )


def test_devices_are_not_opened_even_inside_the_root(loaded):
    model = loaded.unwrap_python_model()
    previous, model.root = model.root, Path("/dev")
    try:
        answer = ask(loaded, ["zero", "null", "stdin"])
    finally:
        model.root = previous
    assert [row["error"] for row in answer[:2]] == [
        "row 0: path 'zero' is not a regular file",
        "row 1: path 'null' is not a regular file",
    ]
    assert answer[2]["error"] and "/proc" not in answer[2]["error"]


def test_serve_root_comes_from_the_environment(monkeypatch, tmp_path):
    from olives.errors import InputError
    from olives.serving.pyfunc import serve_root

    monkeypatch.delenv("OLIVES_SERVE_ROOT", raising=False)
    assert serve_root() is None
    monkeypatch.setenv("OLIVES_SERVE_ROOT", str(tmp_path))
    assert serve_root() == tmp_path.resolve()
    monkeypatch.setenv("OLIVES_SERVE_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="is not a folder"):
        serve_root()


def test_the_byte_cap_is_checked_before_base64_is_decoded(loaded, monkeypatch):
    from olives.serving import pyfunc

    small = dataclasses.replace(pyfunc.DEFAULT_LIMITS, max_bytes=1000)
    monkeypatch.setattr(pyfunc, "DEFAULT_LIMITS", small)
    data = png(0, (200, 200))
    assert len(data) > 1000

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("b64decode ran on text over the cap")

    monkeypatch.setattr(pyfunc, "base64", types.SimpleNamespace(b64decode=refuse))
    frame = pd.DataFrame({"image": [b64(data), "A" * 10**7, data]})
    errors = [row["error"] for row in frame_rows(loaded.predict(frame))]
    assert all("over the limit of 1000 bytes" in e for e in errors), errors


def test_wrapped_base64_and_raw_bytes_give_the_same_answer_in_numeric_columns(loaded):
    data = png(7)
    frame = pd.DataFrame({"image": [b64(data), base64.encodebytes(data).decode(), data]})
    answer = loaded.predict(frame.assign(BCVA=70.0))
    first, second, third = frame_rows(answer)
    assert first["error"] is None and first == second == third
    assert answer["B1_prob"].dtype == "float64" and answer["B1_pred"].dtype == "int64"
    assert answer["BCVA_imputed"].tolist() == [0] * 3 and answer["CST_imputed"].tolist() == [1] * 3


def test_many_unknown_columns_are_answered_quickly_in_one_line(loaded):
    frame = pd.DataFrame([{f"c{i}": i for i in range(20000)}])
    start = time.perf_counter()
    (row,) = frame_rows(loaded.predict(frame))
    assert time.perf_counter() - start < 10
    assert row["error"].startswith("unknown column 'c0'; unknown column 'c1'")
    assert "19995 more unknown columns" in row["error"] and len(row["error"]) < 400


def test_an_unexpected_failure_is_a_generic_error_row(loaded, monkeypatch, caplog):
    model = loaded.unwrap_python_model()

    def broken(scans: list) -> None:
        raise RuntimeError("disk at /srv/secret/models exploded")

    monkeypatch.setattr(model.predictor, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="olives.serving.pyfunc"):
        answer = frame_rows(loaded.predict(pd.DataFrame({"image": [b64(png())] * 2})))
    assert [row["error"] for row in answer] == ["internal error while predicting this row"] * 2
    assert "/srv/secret" in caplog.text  # the server log keeps the traceback
