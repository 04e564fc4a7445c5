"""`download` on hostile local folders: names leaving the folder, FIFOs, missing files, and
clinical values no eye or retina can have. Each is one line naming the file and line."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from olives.config import LocalSource, Params, SyntheticSource, from_dict
from olives.data.schema import Columns, SchemaError, clinical_problem
from olives.data.shards import ShardWriter
from olives.data.sources import (
    SourceError,
    check_clinical_shards,
    checked_row,
    download,
)
from olives.data.synthetic import label_table
from olives.stages import download as download_stage

LABELS = ["B1", "B2", "B3", "B4", "B5", "B6"]
SECRET = b"SECRET-OUTSIDE-BYTES"  # what the file outside the folder holds


def png(seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def image_folder(tmp_path: Path, n: int = 6, **columns: list) -> Path:
    """`tmp_path/imgs`: n images `i.png` and their metadata.csv (columns override)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i}.png").write_bytes(png(i))
    frame = pd.DataFrame(
        {
            "file_name": [f"{i}.png" for i in range(n)],
            "Patient_ID": [i // 3 for i in range(n)],
            **{b: [i % 2 for i in range(n)] for b in LABELS},
            "BCVA": [70.0] * n,
            "CST": [300.0] * n,
            **columns,
        }
    )
    frame.to_csv(folder / "metadata.csv", index=False)
    return folder


def set_cell(folder: Path, row: int, column: str, value: object) -> None:
    frame = pd.read_csv(folder / "metadata.csv", dtype={"file_name": str, column: object})
    frame.loc[row, column] = value
    frame.to_csv(folder / "metadata.csv", index=False)


def params_for(tmp_path: Path, folder: Path) -> Params:
    return from_dict(
        Params,
        {
            "data": {
                "source": "local",
                "local": {"path": str(folder)},
                "raw_dir": str(tmp_path / "raw"),
                "report": str(tmp_path / "raw_report.json"),
            }
        },
    )


def assert_nothing_stored(tmp_path: Path) -> None:
    """No raw data kept, and no byte of the outside files copied anywhere under `tmp_path`."""
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()
    originals = {tmp_path / "outside.png", tmp_path / "elsewhere/x.png"}
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in originals:
            assert SECRET not in path.read_bytes(), path


def outcome_within(seconds: float, fifo: Path, call: Callable[[], object]) -> BaseException | None:
    """What `call` raised (None if nothing), run in a thread: a reader that opens `fifo` would
    block forever, so after `seconds` the FIFO is opened for writing and closed (the reader
    sees end of file) and the test fails."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"download blocked on the FIFO {fifo}")
    return outcome[0]


# --- names from metadata.csv stay inside the folder ------------------------------------------


def hostile_name(tmp_path: Path, folder: Path, kind: str) -> str:
    """A file_name of the given kind that reaches (or tries to reach) outside the folder."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(SECRET)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/x.png").write_bytes(SECRET)
    (folder / "sub").mkdir()
    if kind == "dotdot":
        return "../outside.png"
    if kind == "deep dotdot":
        return "sub/../../../../../../../../etc/hostname"
    if kind == "absolute":
        return str(outside)
    if kind == "etc":
        return "/etc/hostname"
    if kind == "link to a file":
        (folder / "link.png").symlink_to(outside)
        return "link.png"
    if kind == "link to a folder":
        (folder / "sub/away").symlink_to(tmp_path / "elsewhere")
        return "sub/away/x.png"
    if kind == "relative link":
        (folder / "sub/rel.png").symlink_to("../../outside.png")
        return "sub/rel.png"
    raise AssertionError(kind)


KINDS = [
    "dotdot",
    "deep dotdot",
    "absolute",
    "etc",
    "link to a file",
    "link to a folder",
    "relative link",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_file_name_leaving_the_folder_is_one_line_naming_the_line(tmp_path, kind):
    folder = image_folder(tmp_path)
    name = hostile_name(tmp_path, folder, kind)
    set_cell(folder, 3, "file_name", name)
    with pytest.raises(SourceError) as err:
        download(params_for(tmp_path, folder))
    message = str(err.value)
    assert "\n" not in message
    assert f"metadata.csv line 5: file_name: file name {name!r}" in message
    assert ("absolute" if name.startswith("/") else "leads outside") in message
    assert_nothing_stored(tmp_path)


def test_names_that_stay_inside_are_read(tmp_path):
    """The rule, not a list of bad strings: `..` and links that stay inside are fine."""
    folder = image_folder(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub/in.png").symlink_to(folder / "1.png")
    set_cell(folder, 0, "file_name", "sub/../0.png")
    set_cell(folder, 1, "file_name", "sub/in.png")
    set_cell(folder, 2, "file_name", "./2.png")
    report = download(params_for(tmp_path, folder))
    assert report["splits"]["train"]["rows"] == 6 and "missing_files" not in report
    paths = pq.read_table(tmp_path / "raw/train").column("Image").to_pylist()
    stored = {row["path"]: row["bytes"] for row in paths}
    assert stored["sub/in.png"] == png(1) and stored["sub/../0.png"] == png(0)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    folder = image_folder(tmp_path)
    os.mkfifo(folder / "pipe.png")
    set_cell(folder, 2, "file_name", "pipe.png")
    error = outcome_within(20, folder / "pipe.png", lambda: download(params_for(tmp_path, folder)))
    assert isinstance(error, SourceError), error
    assert "metadata.csv line 4: file_name 'pipe.png' is a FIFO, not a regular file" in str(error)
    assert_nothing_stored(tmp_path)


def test_a_folder_or_blank_name_is_refused(tmp_path):
    folder = image_folder(tmp_path)
    (folder / "dir.png").mkdir()
    set_cell(folder, 1, "file_name", "dir.png")
    with pytest.raises(SourceError, match=r"line 3: file_name 'dir.png' is a directory"):
        download(params_for(tmp_path, folder))
    set_cell(folder, 1, "file_name", "")
    with pytest.raises(SourceError, match=r"line 3: file_name: empty file name"):
        download(params_for(tmp_path, folder))


@pytest.mark.parametrize("kind", ["link loop", "name too long"])
def test_a_name_the_system_cannot_open_is_one_line(tmp_path, kind):
    folder = image_folder(tmp_path)
    if kind == "link loop":
        (folder / "a.png").symlink_to(folder / "b.png")
        (folder / "b.png").symlink_to(folder / "a.png")
        name = "a.png"
    else:
        name = "x" * 5000 + ".png"
    set_cell(folder, 0, "file_name", name)
    with pytest.raises(SourceError) as err:
        download(params_for(tmp_path, folder))
    assert str(err.value).startswith(f"{folder / 'metadata.csv'} line 2: file_name")
    assert "\n" not in str(err.value)
    assert_nothing_stored(tmp_path)


def test_a_fifo_among_parquet_files_is_refused(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    os.mkfifo(folder / "train-0.parquet")
    error = outcome_within(
        20, folder / "train-0.parquet", lambda: download(params_for(tmp_path, folder))
    )
    assert isinstance(error, SourceError), error
    assert "train-0.parquet is not a regular file" in str(error)


# --- missing files are counted ---------------------------------------------------------------


@pytest.mark.parametrize("absent", [2, 50])
def test_missing_files_over_the_threshold_stop_the_stage(tmp_path, absent):
    folder = image_folder(tmp_path, n=60)
    for i in range(10, 10 + absent):
        (folder / f"{i}.png").unlink()
    assert absent / 60 > LocalSource.max_missing_fraction
    with pytest.raises(SourceError) as err:
        download(params_for(tmp_path, folder))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"data.local.path: {absent} of 60 files listed in {folder}")
    assert "(first: 10.png, 11.png" in message and message.endswith("check the folder")
    assert not (tmp_path / "raw").exists()


def test_a_missing_file_under_the_threshold_is_one_warning(tmp_path, caplog):
    folder = image_folder(tmp_path, n=60)
    (folder / "7.png").unlink()
    with caplog.at_level(logging.WARNING):
        report = download_stage.run(params_for(tmp_path, folder))
    warnings = [r for r in caplog.records if r.name == "olives.data.local"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "1 of 60 files listed" in warnings[0].message and "(first: 7.png)" in warnings[0].message
    assert report["splits"]["train"]["rows"] == 59
    recorded = pd.read_json(tmp_path / "raw_report.json", typ="series")["missing_files"]
    assert recorded == {"count": 1, "first": [{"line": 9, "path": str(folder / "7.png")}]}


# --- clinical values checked at download -----------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("BCVA", "1e308", "BCVA = 1e+308 is outside"),
        ("BCVA", "inf", "BCVA is inf, not a finite number"),
        ("BCVA", "-inf", "BCVA is -inf"),
        ("BCVA", "101", "BCVA = 101 is outside"),
        ("CST", "-500", "CST = -500 is outside"),
        ("CST", "20000", "CST = 20000 is outside"),
    ],
)
def test_an_implausible_clinical_value_names_line_and_column(tmp_path, column, value, shown):
    folder = image_folder(tmp_path)
    set_cell(folder, 4, column, value)
    with pytest.raises(SchemaError) as err:
        download(params_for(tmp_path, folder))
    assert str(err.value).startswith(f"{folder / 'metadata.csv'} line 6: column {shown}")
    assert not (tmp_path / "raw").exists()


def test_plausible_and_blank_clinical_values_pass(tmp_path):
    bcva = [0.0, 100.0, None, 55.5, 27.0, 99.0]  # None: a blank cell, imputed later
    folder = image_folder(tmp_path, BCVA=bcva, CST=[50.0, 1500.0, 723.0, None, 151.0, None])
    report = download(params_for(tmp_path, folder))
    assert report["splits"]["train"]["rows"] == 6
    table = pq.read_table(tmp_path / "raw/train", columns=["BCVA", "CST"]).to_pandas()
    assert table["BCVA"].isna().sum() == 1 and table["CST"].isna().sum() == 2


def test_parquet_rows_are_checked_too(tmp_path):
    cols = Columns("Image", tuple(LABELS), ("BCVA", "CST"), "Patient_ID", "Eye_ID")
    rows = [
        {
            "Image": {"bytes": png(i), "path": f"{i}.png"},
            **{b: 1.0 for b in LABELS},
            "BCVA": 70.0,
            "CST": -500.0 if i == 3 else 300.0,
            "Eye_ID": 1.0,
            "Patient_ID": i,
        }
        for i in range(5)
    ]
    folder = tmp_path / "shards"
    with ShardWriter(folder / "train", cols.features(), 10) as writer:
        writer.write_all(rows)
    with pytest.raises(SchemaError, match=r"part-00000.parquet row 3: column CST = -500"):
        download(params_for(tmp_path, folder))


def test_checked_row_treats_nan_as_blank_and_text_as_an_error():
    cols = Columns("Image", tuple(LABELS), ("BCVA", "CST"), "Patient_ID", None)
    row = {**{b: 0 for b in LABELS}, "Patient_ID": 1, "BCVA": float("nan"), "CST": None}
    assert checked_row(row, cols, "here")["Patient_ID"] == 1
    with pytest.raises(SchemaError, match=r"here: column BCVA is 'lots', not a number"):
        checked_row(row | {"BCVA": "lots"}, cols, "here")


# --- the synthetic generator's rows -----------------------------------------------------------


def test_synthetic_download_passes_the_clinical_check(tmp_path):
    params = from_dict(
        Params,
        {
            "data": {
                "source": "synthetic",
                "raw_dir": str(tmp_path / "raw"),
                "synthetic": {"preset": "tiny", "width": 48, "height": 48, "num_workers": 1},
            }
        },
    )
    report = download(params)
    assert report["splits"]["train"]["rows"] > 0 and report["splits"]["test"]["rows"] > 0


@pytest.mark.parametrize("preset", ["tiny", "default", "full"])
def test_every_synthetic_preset_has_plausible_clinical_values(preset):
    """The label table holds exactly the values `generate` writes, without rendering."""
    for seed in (0, 1):
        for split in ("train", "test"):
            table = label_table(SyntheticSource(preset=preset), seed, split, True)
            for name in ("BCVA", "CST"):
                problems = {clinical_problem(name, v) for v in table[name].dropna()}
                assert problems == {None}, (preset, seed, split, problems - {None})


def test_synthetic_shards_are_checked_after_generation(tmp_path):
    cols = Columns("Image", tuple(LABELS), ("BCVA", "CST"), "Patient_ID", "Eye_ID")
    rows = [
        {
            "Image": {"bytes": b"", "path": f"{i}.png"},
            **{b: 0.0 for b in LABELS},
            "BCVA": 1e308 if i == 2 else 80.0,
            "CST": 300.0,
            "Eye_ID": 1.0,
            "Patient_ID": 1,
        }
        for i in range(4)
    ]
    with ShardWriter(tmp_path / "test", cols.features(), 10) as writer:
        writer.write_all(rows)
    with pytest.raises(SchemaError, match=r"synthetic test/part-00000.parquet row 2: column BCVA"):
        check_clinical_shards(tmp_path, cols)


def test_the_missing_threshold_is_a_parameter(tmp_path):
    """`data.local.max_missing_fraction: 0.5` lets 20 of 60 absent files pass, with a warning."""
    folder = image_folder(tmp_path, n=60)
    for i in range(20):
        (folder / f"{i}.png").unlink()
    params = params_for(tmp_path, folder)
    local = dataclasses.replace(params.data.local, max_missing_fraction=0.5)
    params = dataclasses.replace(params, data=dataclasses.replace(params.data, local=local))
    report = download(params)
    assert report["missing_files"]["count"] == 20
