"""`open_cache` on a broken image cache: truncated, foreign or mismatched files are one line
saying to rebuild the cache, never a traceback from mmap."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import write_tiny_cache
from olives.cli import main
from olives.data.cache import BrokenCacheError, open_cache
from olives.errors import InputError

REBUILD = "re-run `olives stage preprocess` (or `dvc repro preprocess`)"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A real tiny cache (24 images of 16x16) under `tmp_path/data/cache`."""
    write_tiny_cache(tmp_path, n_patients=4, per_patient=6, size=16)
    return tmp_path / "data/cache"


def assert_one_line(error: BaseException, path: Path) -> None:
    message = str(error)
    assert isinstance(error, InputError)
    assert "\n" not in message
    assert message.startswith(f"{path} is truncated or not this project's cache (")
    assert message.endswith(f"); {REBUILD}")


def test_an_intact_cache_opens(cache):
    images, index = open_cache(cache)
    assert images.shape == (24, 16, 16) and images.dtype == np.uint8 and len(index) == 24
    assert isinstance(images, np.memmap)


@pytest.mark.parametrize("cut", [1, 100, 16 * 16 * 24, "header", "all"])
def test_a_truncated_image_file_is_one_line(cache, cut):
    path = cache / "images.npy"
    data = path.read_bytes()
    keep = {"header": 30, "all": 0}.get(cut, len(data) - cut if isinstance(cut, int) else 0)
    path.write_bytes(data[:keep])
    with pytest.raises(BrokenCacheError) as err:
        open_cache(cache)
    assert_one_line(err.value, path)
    if isinstance(cut, int):
        assert f"{keep} bytes on disk" in str(err.value)


def test_extra_bytes_after_the_images_are_one_line(cache):
    path = cache / "images.npy"
    path.write_bytes(path.read_bytes() + b"\0" * 256)
    with pytest.raises(BrokenCacheError) as err:
        open_cache(cache)
    assert_one_line(err.value, path)


@pytest.mark.parametrize(
    "foreign",
    ["text", "float32", "2-D", "4-D", "fortran", "pickled", "folder"],
)
def test_a_foreign_image_file_is_one_line(cache, foreign):
    path = cache / "images.npy"
    array = np.zeros((24, 16, 16), np.uint8)
    if foreign == "text":
        path.write_text("images are elsewhere\nsecond line\n")
    elif foreign == "float32":
        np.save(path, array.astype(np.float32))
    elif foreign == "2-D":
        np.save(path, array.reshape(24, 256))
    elif foreign == "4-D":
        np.save(path, array.reshape(24, 16, 16, 1))
    elif foreign == "fortran":
        np.save(path, np.asfortranarray(array))
    elif foreign == "pickled":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(BrokenCacheError) as err:
        open_cache(cache)
    assert_one_line(err.value, path)


def test_an_index_that_does_not_match_the_images_is_one_line(cache):
    path = cache / "index.parquet"
    index = pd.read_parquet(path)
    longer = pd.concat([index, index.iloc[:3].assign(row=[24, 25, 26])], ignore_index=True)
    cases = {
        "longer": longer,
        "repeated rows": index.assign(row=0),
        "negative row": index.assign(row=index["row"] - 1),
        "no row column": index.drop(columns="row"),
        "text rows": index.assign(row=index["row"].astype(str)),
    }
    for name, table in cases.items():
        table.to_parquet(path, index=False)
        with pytest.raises(BrokenCacheError) as err:
            open_cache(cache)
        assert str(err.value).startswith(str(path)), name
        assert_one_line(err.value, path)
    # Shorter: fine while skipped.csv (which preprocess always writes) accounts for the rest.
    index.iloc[:20].to_parquet(path, index=False)
    pd.DataFrame({"path": [f"{i}.png" for i in range(4)]}).to_csv(cache / "skipped.csv")
    assert len(open_cache(cache)[1]) == 20
    pd.DataFrame({"path": ["1.png"]}).to_csv(cache / "skipped.csv")
    with pytest.raises(BrokenCacheError, match=r"\(20 rows \+ 1 skipped for 24 images"):
        open_cache(cache)


def test_a_text_file_as_index_is_one_line(cache):
    path = cache / "index.parquet"
    path.write_text("row,path\n0,a.png\n")
    with pytest.raises(BrokenCacheError) as err:
        open_cache(cache)
    assert_one_line(err.value, path)


def test_a_missing_cache_says_to_run_preprocess(tmp_path, cache):
    with pytest.raises(
        BrokenCacheError, match=r"images.npy: not found; run `olives stage preprocess`"
    ):
        open_cache(tmp_path / "nowhere")
    (cache / "index.parquet").unlink()
    with pytest.raises(BrokenCacheError, match=r"index.parquet: not found"):
        open_cache(cache)


def test_the_command_line_prints_one_line_for_a_truncated_cache(tmp_path, cache, caplog, capsys):
    path = cache / "images.npy"
    path.write_bytes(path.read_bytes()[:-7])
    params = {
        "preprocess": {"cache_dir": str(cache)},
        "split": {"out_dir": str(tmp_path / "data/split"), "candidates": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with caplog.at_level(logging.ERROR):
        assert main(["--params", str(tmp_path / "params.yaml"), "stage", "split"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"BrokenCacheError: {path} is truncated")
    assert "Traceback" not in capsys.readouterr().err
