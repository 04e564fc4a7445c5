"""Every bad file or row of a run is reported at once, and the good rows go on.

Empty (0-byte) images count with undecodable ones against `preprocess.max_corrupt_fraction`,
each listed in `skipped.csv` with its reason; past the threshold, one error says how many and
where the list is. Refused names and bad values stop `download`, but all of them in one error.
The bad inputs are of kinds the decoder was not written around: truncated and foreign files,
a GIF, a text file, an image too small to be a scan.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from olives.config import Params, from_dict
from olives.data.cache import EMPTY_REASON, SKIPPED, TooManyCorruptError, open_cache
from olives.data.decode import DecodeError
from olives.data.schema import SHOWN, Columns, SchemaError
from olives.data.shards import ShardWriter
from olives.data.sources import SourceError, download
from olives.errors import InputError
from olives.stages import download as download_stage
from olives.stages import preprocess as preprocess_stage

LABELS = ["B1", "B2", "B3", "B4", "B5", "B6"]
COLS = Columns("Image", tuple(LABELS), ("BCVA", "CST"), "Patient_ID", "Eye_ID")


def encoded(seed: int, fmt: str = "PNG", shape: tuple[int, int] = (40, 48)) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


# name -> bytes of each bad image: 3 empty, 5 undecodable of different kinds
BAD = {
    "empty-a.png": b"",
    "empty-b.tif": b"",
    "sub/empty-c.png": b"",
    "truncated.png": encoded(1)[:70],
    "noise.png": np.random.default_rng(2).bytes(3000),
    "notes.png": b"exported by the OCT viewer, see attached\n",
    "animation.png": encoded(3, "GIF"),  # a format no B-scan comes as
    "thumbnail.png": encoded(4, shape=(8, 8)),  # too small to hold a scan
}
N_GOOD, N_EMPTY = 32, 3


def files() -> dict[str, bytes]:
    good = {f"ok/{i:02d}.png": encoded(100 + i) for i in range(N_GOOD)}
    return good | BAD


def metadata(names: list[str]) -> pd.DataFrame:
    n = len(names)
    return pd.DataFrame(
        {
            "file_name": names,
            "Patient_ID": [i // 4 for i in range(n)],
            **{b: [(i + k) % 2 for i in range(n)] for k, b in enumerate(LABELS)},
            "BCVA": [70.0] * n,
            "CST": [300.0] * n,
        }
    )


def image_folder(root: Path, blobs: dict[str, bytes], absent: tuple[str, ...] = ()) -> Path:
    """An ImageFolder: the images and a metadata.csv listing them (and `absent` ones)."""
    root.mkdir()
    for name, data in blobs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    metadata([*blobs, *absent]).to_csv(root / "metadata.csv", index=False)
    return root


def shard_rows(blobs: dict[str, bytes]) -> list[dict]:
    frame = metadata(list(blobs))
    rows = frame.drop(columns="file_name").to_dict("records")
    for row, (name, data) in zip(rows, blobs.items(), strict=True):
        row["Image"] = {"bytes": data, "path": name}
        row["Eye_ID"] = 1.0
        for b in LABELS:
            row[b] = float(row[b])
    return rows


def parquet_folder(root: Path, blobs: dict[str, bytes]) -> Path:
    """Parquet shards as downloaded from the hub (`train-*`), the empty images as b""."""
    with ShardWriter(root, COLS.features(), 9, prefix="train") as writer:
        writer.write_all(shard_rows(blobs))
    return root


def hub_folder(root: Path, blobs: dict[str, bytes]) -> Path:
    """A folder in the hub repository's layout, read through `load_dataset`."""
    (root / "biomarker_detection").mkdir(parents=True)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: biomarker_detection\n  data_files:\n"
        "  - split: train\n    path: biomarker_detection/train-*\n---\n"
    )
    parquet_folder(root / "biomarker_detection", blobs)
    return root


def params_for(tmp_path: Path, layout: str, folder: Path, corrupt: float = 0.3) -> Params:
    if layout == "hub":
        data = {
            "source": "huggingface",
            "huggingface": {"repo_id": str(folder), "splits": ["train"]},
        }
    else:
        data = {"source": "local", "local": {"path": str(folder), "max_missing_fraction": 0.05}}
    return from_dict(
        Params,
        {
            "data": data | {"raw_dir": str(tmp_path / "raw"), "report": str(tmp_path / "raw.json")},
            "preprocess": {
                "height": 32,
                "width": 32,
                "cache_dir": str(tmp_path / "cache"),
                "report": str(tmp_path / "preprocess.json"),
                "max_corrupt_fraction": corrupt,
                "num_workers": 1,
                "batch_rows": 8,
            },
        },
    )


def source(tmp_path: Path, layout: str) -> Path:
    if layout == "imagefolder":
        return image_folder(tmp_path / "imgs", files(), absent=("gone.png",))
    if layout == "parquet":
        return parquet_folder(tmp_path / "shards", files())
    return hub_folder(tmp_path / "hub", files())


LAYOUTS = ["imagefolder", "parquet", "hub"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_images_under_the_threshold_are_all_listed_and_the_rest_cached(
    tmp_path, layout, caplog
):
    params = params_for(tmp_path, layout, source(tmp_path, layout))
    with caplog.at_level(logging.WARNING):
        raw = download_stage.run(params)
    assert raw["splits"]["train"]["rows"] == N_GOOD + len(BAD)  # empty images kept for preprocess
    if layout == "imagefolder":  # the listing pass sees them: one warning each kind
        assert raw["empty_files"]["count"] == N_EMPTY
        assert raw["missing_files"]["count"] == 1
        warned = [r.getMessage() for r in caplog.records if r.name == "olives.data.local"]
        assert len(warned) == 2 and "3 of 41 files listed" in warned[1]
        assert "are empty (first: empty-a.png, empty-b.tif, sub/empty-c.png)" in warned[1]

    report = preprocess_stage.run(params)
    assert report["cached"] == N_GOOD and report["skipped_corrupt"] == len(BAD)
    assert report["skipped_empty"] == N_EMPTY
    skipped = pd.read_csv(tmp_path / "cache" / SKIPPED)
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == set(BAD)
    assert {name for name, why in reasons.items() if why == EMPTY_REASON} == {
        name for name, data in BAD.items() if not data
    }
    assert "holds no B-scan" in reasons["thumbnail.png"]
    assert all(
        why.startswith("cannot decode image")
        for name, why in reasons.items()
        if name != "thumbnail.png" and BAD[name]
    )
    images, index = open_cache(tmp_path / "cache")
    assert sorted(index["path"]) == [f"ok/{i:02d}.png" for i in range(N_GOOD)]
    assert images[index["row"].to_numpy()].shape == (N_GOOD, 32, 32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_images_over_the_threshold_are_one_error_naming_count_and_list(tmp_path, layout):
    params = params_for(tmp_path, layout, source(tmp_path, layout), corrupt=0.1)
    download_stage.run(params)  # 8 of 40 bad images: download keeps them for preprocess
    listing = tmp_path / "cache" / SKIPPED
    with pytest.raises(TooManyCorruptError) as err:
        preprocess_stage.run(params)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"8 of {N_GOOD + len(BAD)} images (20.00%) could not be decoded (3 empty, 5 undecodable)"
    )
    assert message.endswith(
        f"preprocess.max_corrupt_fraction = 10.00%; they are listed in {listing}"
    )
    assert set(pd.read_csv(listing)["path"]) == set(BAD)  # the list is there, complete


def test_only_empty_images_leave_the_listing_behind(tmp_path):
    folder = image_folder(tmp_path / "imgs", {f"{i}.png": b"" for i in range(4)})
    params = params_for(tmp_path, "imagefolder", folder, corrupt=1.0)
    assert download(params)["empty_files"]["count"] == 4
    with pytest.raises(DecodeError, match=r"no image could be decoded: see skipped\.csv"):
        preprocess_stage.run(params)
    assert (pd.read_csv(tmp_path / "cache" / SKIPPED)["reason"] == EMPTY_REASON).all()


# --- what stops download: all of it in one error ----------------------------------------------


def test_every_refused_file_name_is_in_one_error(tmp_path):
    folder = image_folder(tmp_path / "imgs", {f"{i}.png": encoded(i) for i in range(8)})
    os.mkfifo(folder / "pipe.png")
    (folder / "dir.png").mkdir()
    table = pd.read_csv(folder / "metadata.csv")
    table.loc[[1, 3, 6], "file_name"] = ["pipe.png", "../../etc/hostname", "dir.png"]
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(SourceError) as err:
        download(params_for(tmp_path, "imagefolder", folder))
    message, where = str(err.value), folder / "metadata.csv"
    assert "\n" not in message
    assert message.startswith(f"3 files listed in {where} refused: {where} line 3: file_name")
    assert f"{where} line 3: file_name 'pipe.png' is a FIFO" in message
    assert f"{where} line 5: file_name: file name '../../etc/hostname' leads outside" in message
    assert f"{where} line 8: file_name 'dir.png' is a directory" in message
    assert not (tmp_path / "raw").exists()


def test_every_bad_value_of_every_row_is_in_one_error(tmp_path):
    folder = image_folder(tmp_path / "imgs", {f"{i}.png": encoded(i) for i in range(12)})
    table = pd.read_csv(folder / "metadata.csv")
    table.loc[1, "B4"] = 2  # line 3
    table.loc[3, ["BCVA", "CST"]] = [1e308, -500]  # line 5: two problems in one row
    table.loc[[6, 7, 8, 9], "CST"] = 20000  # lines 8-11
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(SchemaError) as err:
        download(params_for(tmp_path, "imagefolder", folder))
    message, where = str(err.value), folder / "metadata.csv"
    assert "\n" not in message
    assert message.startswith(f"7 problems in the source's rows: {where} line 3: label 'B4' is 2")
    assert f"{where} line 5: column BCVA = 1e+308" in message
    assert f"{where} line 5: column CST = -500" in message
    assert f"{where} line 8: column CST = 20000" in message
    assert message.endswith(f"; ... and {7 - SHOWN} more")
    assert not (tmp_path / "raw").exists()


def test_every_cell_that_is_no_number_is_in_one_error(tmp_path):
    folder = image_folder(tmp_path / "imgs", {f"{i}.png": encoded(i) for i in range(6)})
    table = pd.read_csv(folder / "metadata.csv", dtype=object)
    table.loc[1, "BCVA"] = "twenty"
    table.loc[4, "CST"] = "n/a µm"
    table.loc[5, "B1"] = "yes"
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(SchemaError) as err:
        download(params_for(tmp_path, "imagefolder", folder))
    where = folder / "metadata.csv"
    assert str(err.value) == (
        f"3 cells of {where} are not numbers: {where}: column 'B1' line 7: 'yes' is not a "
        f"number; {where}: column 'BCVA' line 3: 'twenty' is not a number; {where}: column "
        f"'CST' line 6: 'n/a µm' is not a number"
    )


def test_every_unreadable_parquet_file_is_in_one_error(tmp_path):
    folder = parquet_folder(tmp_path / "shards", {f"{i}.png": encoded(i) for i in range(4)})
    pq.write_table(pa.table({"Image": [b"x"], "B1": ["yes"]}), folder / "train-bad.parquet")
    (folder / "train-text.parquet").write_text("not parquet")
    os.mkfifo(folder / "train-zpipe.parquet")
    with pytest.raises(InputError) as err:  # the first problem's class: a SchemaError here
        download(params_for(tmp_path, "parquet", folder))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"3 parquet files under {folder} refused")
    assert "train-bad.parquet: column 'Image' has type binary" in message
    assert "missing column 'B2'" in message
    assert f"{folder / 'train-text.parquet'} is not a readable parquet file" in message
    assert f"{folder / 'train-zpipe.parquet'} is not a regular file" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_image_is_refused_with_the_others(tmp_path):
    folder = image_folder(tmp_path / "imgs", {f"{i}.png": encoded(i) for i in range(4)})
    (folder / "2.png").chmod(0)
    with pytest.raises(SourceError, match=r"line 4: file_name '2.png' cannot be read"):
        download(params_for(tmp_path, "imagefolder", folder))
