"""download -> preprocess -> split on tiny fixtures, a hub-layout folder and the real files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from olives.cli import main
from olives.config import ConfigError, Params, from_dict
from olives.data.cache import TooManyCorruptError, build_cache, open_cache
from olives.data.decode import DecodeError, decode_grey, load_scan, resize
from olives.data.prepare import make_splits
from olives.data.schema import Columns, SchemaError
from olives.data.shards import ShardWriter
from olives.data.sources import SourceError, download

LABELS = ["B1", "B2", "B3", "B4", "B5", "B6"]


def png(seed: int, shape=(40, 48), mode_16bit: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(
        0, 65535 if mode_16bit else 255, shape, dtype=np.uint16 if mode_16bit else np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def row(i: int, patient: int, data: bytes | None = None, labelled: bool = True) -> dict:
    rng = np.random.default_rng(i)
    labels = {b: float(rng.integers(0, 2)) if labelled else None for b in LABELS}
    return {
        "Image": {"bytes": png(i) if data is None else data, "path": f"p{patient}/{i}.png"},
        **labels,
        "BCVA": float(60 + i % 30),
        "CST": None if i % 7 == 0 else 300.0 + i,
        "Eye_ID": float(patient * 2),
        "Patient_ID": patient,
    }


def write_hub_folder(root: Path, splits: dict[str, list[dict]], float_ids: bool = False) -> Path:
    """A folder in the Hugging Face repository layout, as `load_dataset` resolves the hub
    (`float_ids`: Patient_ID as float64, as the hub's dataset viewer shows it)."""
    (root / "biomarker_detection").mkdir(parents=True)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: biomarker_detection\n  data_files:\n"
        "  - split: train\n    path: biomarker_detection/train-*\n"
        "  - split: test\n    path: biomarker_detection/test-*\n---\n"
    )
    cols = Columns("Image", tuple(LABELS), ("BCVA", "CST"), "Patient_ID", "Eye_ID")
    features = cols.features("float64" if float_ids else "int64")
    for split, rows in splits.items():
        with ShardWriter(root / "biomarker_detection", features, 7, prefix=split) as writer:
            writer.write_all(rows)
    return root


def params_for(tmp_path: Path, **data) -> Params:
    return from_dict(
        Params,
        {
            "data": {"raw_dir": str(tmp_path / "raw"), **data},
            "preprocess": {
                "height": 32,
                "width": 32,
                "cache_dir": str(tmp_path / "cache"),
                "num_workers": 2,
                "batch_rows": 8,
            },
            "split": {"val_fraction": 0.25, "candidates": 4},
        },
    )


# --- decoding ---------------------------------------------------------------------------------


def test_decode_16bit_png_and_tiff_scale_by_bit_depth():
    array = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50
    for fmt in ("PNG", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, fmt)
        out = decode_grey(buf.getvalue())
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, np.rint(array / 257.0).astype(np.uint8))


def test_decode_rgb_jpeg_matches_pil_luma():
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")).astype(int)
    assert np.abs(decode_grey(buf.getvalue()).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("data", [b"", b"not an image", png(0)[:60]])
def test_decode_rejects_corrupt_bytes(data):
    with pytest.raises(DecodeError):
        decode_grey(data)


def test_resize_policies_keep_content_where_documented():
    wide = np.full((50, 200), 200, dtype=np.uint8)  # 4:1, like a 1536x496 scan is ~3:1
    padded = resize(wide, 40, 40, "pad")
    assert padded[:14].max() == 0 and padded[-14:].max() == 0  # black bands above and below
    assert padded[20].min() == 200
    assert resize(wide, 40, 40, "crop").min() == 200  # filled, lateral edges cut
    assert resize(wide, 40, 40, "stretch").shape == (40, 40)
    with pytest.raises(ValueError, match=r"preprocess\.resize"):
        resize(wide, 40, 40, "squash")


def test_real_olives_tiff_decodes_like_pil(shared_dir):
    data = (shared_dir / "olives-reference/images/olives_bscan_504x496.tif").read_bytes()
    grey = decode_grey(data)
    assert grey.shape == (496, 504)
    np.testing.assert_array_equal(grey, np.asarray(Image.open(io.BytesIO(data))))
    assert load_scan(data, 224, 224).shape == (224, 224)


# --- download ---------------------------------------------------------------------------------


def test_hub_layout_folder_streams_and_drops_unlabeled_rows(tmp_path):
    rows = [row(i, patient=i // 3, labelled=i % 4 != 0) for i in range(12)]
    test_rows = [row(100 + i, patient=50) for i in range(5)]
    hub = write_hub_folder(tmp_path / "hub", {"train": rows, "test": test_rows})
    params = params_for(tmp_path, source="huggingface", huggingface={"repo_id": str(hub)})
    report = download(params)
    train = report["splits"]["train"]
    assert train["rows"] == train["labelled_rows"] == 9 and train["unlabeled_rows"] == 0
    assert report["splits"]["test"]["patients"] == 1
    assert "constant" in report["splits"]["test"]["warnings"][0]
    stored = pq.read_table(tmp_path / "raw/train").to_pandas()
    assert stored["B1"].notna().all()

    keep = params_for(
        tmp_path, source="huggingface", include_unlabeled=True, huggingface={"repo_id": str(hub)}
    )
    assert download(keep)["splits"]["train"]["unlabeled_rows"] == 3


def test_unreachable_hub_names_the_offline_sources(tmp_path, monkeypatch):
    """`load_dataset`'s own connection error, past the reachability probe (a hub lost between
    the two); the probe itself: tests/test_hub_offline.py."""
    import datasets

    from olives.data import hub

    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'gOLIVES/OLIVES_Dataset' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(hub, "check_hub_reachable", lambda repo_id, revision: None)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceError, match=r"data\.source: synthetic"):
        download(params_for(tmp_path, source="huggingface"))


def test_schema_error_names_the_missing_and_mistyped_columns(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    table = pa.table(
        {"Image": [{"bytes": png(0), "path": "a.png"}], "B1": ["yes"], "Patient_ID": [1]}
    )
    pq.write_table(table, folder / "train-0.parquet")
    with pytest.raises(SchemaError) as err:
        download(params_for(tmp_path, source="local", local={"path": str(folder)}))
    message = str(err.value)
    assert "train-0.parquet" in message and "missing column 'B2'" in message
    assert "column 'B1' has type string" in message


def test_imagefolder_error_names_file_and_line(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(0))
    frame = pd.DataFrame(
        {
            "file_name": ["a.png", "a.png"],
            "Patient_ID": [1, 2],
            **{b: [0, 1] for b in LABELS},
            "BCVA": [70, "twenty"],
            "CST": [300, 310],
        }
    )
    frame.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(SchemaError, match=r"metadata.csv: column 'BCVA' line 3"):
        download(params_for(tmp_path, source="local", local={"path": str(folder)}))


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match=r"data\.local\.path: folder not found"):
        download(params_for(tmp_path, source="local", local={"path": str(tmp_path / "nope")}))


# --- preprocess -------------------------------------------------------------------------------


def build_local(tmp_path: Path, blobs: list[bytes], patients: list[int]) -> Params:
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    names = []
    for i, blob in enumerate(blobs):
        (folder / f"{i}.png").write_bytes(blob)
        names.append(f"{i}.png")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "file_name": names,
            "Patient_ID": patients,
            **{b: rng.integers(0, 2, len(names)) for b in LABELS},
            "BCVA": 70.0,
            "CST": 300.0,
        }
    )
    frame.to_csv(folder / "metadata.csv", index=False)
    params = params_for(tmp_path, source="local", local={"path": str(folder)})
    download(params)
    return params


def test_corrupt_images_are_skipped_listed_and_fail_over_threshold(tmp_path):
    blobs = [png(i) for i in range(10)]
    blobs[3] = b"\x89PNG broken"
    params = build_local(tmp_path, blobs, patients=list(range(10)))
    cols = Columns.from_params(params)
    lenient = from_dict(
        type(params.preprocess),
        {
            "height": 16,
            "width": 16,
            "cache_dir": str(tmp_path / "cache"),
            "max_corrupt_fraction": 0.2,
        },
    )
    report = build_cache(Path(params.data.raw_dir), lenient, cols)
    assert report["cached"] == 9 and report["skipped_corrupt"] == 1
    skipped = pd.read_csv(tmp_path / "cache/skipped.csv")
    assert skipped["path"].tolist() == ["3.png"]
    images, index = open_cache(tmp_path / "cache")
    assert "3.png" not in set(index["path"])
    np.testing.assert_array_equal(images[index["row"]].shape, (9, 16, 16))

    with pytest.raises(TooManyCorruptError, match=r"skipped.csv"):
        build_cache(Path(params.data.raw_dir), params.preprocess, cols)
    # The listing survives the failure: nothing is lost.
    assert pd.read_csv(tmp_path / "cache/skipped.csv")["path"].tolist() == ["3.png"]


def test_cache_rows_hold_the_decoded_images(tmp_path):
    blobs = [png(i, shape=(64, 80), mode_16bit=i % 2 == 1) for i in range(6)]
    params = build_local(tmp_path, blobs, patients=[1, 1, 2, 2, 3, 3])
    build_cache(Path(params.data.raw_dir), params.preprocess, Columns.from_params(params))
    images, index = open_cache(tmp_path / "cache")
    for rec in index.itertuples():
        expected = load_scan(blobs[int(rec.path.split(".")[0])], 32, 32)
        np.testing.assert_array_equal(images[rec.row], expected)


def test_duplicates_link_patients_and_never_cross_splits(tmp_path):
    blobs = [png(i) for i in range(40)]
    blobs[5] = blobs[30]  # patient 1 and patient 7 share an image
    patients = [i // 5 for i in range(40)]
    params = build_local(tmp_path, blobs, patients)
    cols = Columns.from_params(params)
    report = build_cache(Path(params.data.raw_dir), params.preprocess, cols)
    assert report["duplicate_groups_across_patients"] == 1
    _images, index = open_cache(tmp_path / "cache")
    out, _, _summary = make_splits(index, params.split, cols, seed=0)
    by_patient = out.groupby("Patient_ID")["split"].first()
    assert by_patient[1] == by_patient[6]
    assert set(out["split"]) == {"train", "val", "test"}
    assert out.groupby("sha1")["split"].nunique().max() == 1


def test_official_test_duplicate_is_excluded_from_training(tmp_path):
    shared = png(999)
    train = [row(i, patient=i // 4) for i in range(32)]
    train[0]["Image"]["bytes"] = shared
    test = [row(100 + i, patient=90 + i // 4) for i in range(8)]
    test[0]["Image"]["bytes"] = shared
    hub = write_hub_folder(tmp_path / "hub", {"train": train, "test": test})
    params = params_for(tmp_path, source="huggingface", huggingface={"repo_id": str(hub)})
    download(params)
    cols = Columns.from_params(params)
    build_cache(Path(params.data.raw_dir), params.preprocess, cols)
    _images, index = open_cache(tmp_path / "cache")
    out, stats, summary = make_splits(index, params.split, cols, seed=0)
    assert summary["excluded_duplicates_of_test"] == 1
    assert (out["split"] == "test").sum() == 8
    assert (
        out.loc[out["sha1"] == out.loc[out["split"] == "test", "sha1"].iloc[0], "split"]
        .tolist()
        .count("test")
        == 1
    )
    # Train-only statistics: imputation and standardisation never see val/test values.
    train_cst = out.loc[out["split"] == "train", "CST"]
    assert stats["clinical"]["CST"]["mean"] == pytest.approx(train_cst.mean())
    assert out.loc[out["CST"].isna(), "CST_missing"].eq(1).all()
    z = out.loc[out["CST"].isna(), "CST_z"]
    expected = (stats["clinical"]["CST"]["median"] - train_cst.mean()) / train_cst.std(ddof=0)
    np.testing.assert_allclose(z, expected, rtol=1e-5)


def test_kermany_sample_runs_through_download_preprocess_split(shared_dir, tmp_path):
    params = from_dict(
        Params,
        {
            "labels": ["CNV", "DME", "DRUSEN", "NORMAL"],
            "clinical": [],
            "eye_column": None,
            "data": {
                "source": "local",
                "raw_dir": str(tmp_path / "raw"),
                "local": {"path": str(shared_dir / "kermany-oct-sample")},
            },
            "preprocess": {"height": 64, "width": 64, "cache_dir": str(tmp_path / "cache")},
            "split": {"candidates": 4},
        },
    )
    report = download(params)
    assert report["splits"]["train"]["rows"] == 160
    assert report["splits"]["train"]["patients"] == 120
    cols = Columns.from_params(params)
    cache = build_cache(Path(params.data.raw_dir), params.preprocess, cols)
    assert cache["cached"] == 160 and cache["skipped_corrupt"] == 0
    images, index = open_cache(tmp_path / "cache")
    assert images.shape[1:] == (64, 64) and images[index["row"]].mean() > 10
    out, _, _summary = make_splits(index, params.split, cols, seed=1)
    assert out.groupby("Patient_ID")["split"].nunique().max() == 1
    assert {"train", "val", "test"} <= set(out["split"])


# --- params -----------------------------------------------------------------------------------


def test_unknown_parameter_is_an_error_naming_it(tmp_path, caplog):
    (tmp_path / "params.yaml").write_text("data:\n  sorce: local\n")
    assert main(["--params", str(tmp_path / "params.yaml"), "stage", "download"]) == 2
    assert "data.sorce" in caplog.text and "data.source" in caplog.text


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"'preprocess.height' = 'big' is not int"):
        from_dict(Params, {"preprocess": {"height": "big"}})


def test_repository_params_load():
    params_file = Path(__file__).resolve().parents[1] / "params.yaml"
    params = from_dict(Params, __import__("yaml").safe_load(params_file.read_text()))
    assert params.data.source == "synthetic"
    assert json.dumps(params.labels) == json.dumps(LABELS)


def test_failed_download_keeps_the_previous_raw_data(tmp_path, monkeypatch):
    import datasets

    rows = {"train": [row(i, patient=i) for i in range(4)], "test": [row(9, patient=9)]}
    hub = write_hub_folder(tmp_path / "hub", rows)
    good = params_for(tmp_path, source="huggingface", huggingface={"repo_id": str(hub)})
    download(good)
    before = sorted(p.name for p in (tmp_path / "raw/train").iterdir())

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'gOLIVES/OLIVES_Dataset' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceError):
        download(good)
    assert sorted(p.name for p in (tmp_path / "raw/train").iterdir()) == before
    assert not (tmp_path / "raw.partial").exists()


# --- real-world ids and hostile input (issue 11) ---------------------------------------------


def clinic_folder(tmp_path: Path, **columns) -> Path:
    """An ImageFolder as a clinic exports it: text patient ids, OD/OS eyes."""
    folder = tmp_path / "clinic"
    folder.mkdir(exist_ok=True)
    n = len(next(iter(columns.values())))
    for i in range(n):
        (folder / f"{i}.png").write_bytes(png(i))
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "file_name": [f"{i}.png" for i in range(n)],
            **{b: rng.integers(0, 2, n) for b in LABELS},
            "BCVA": 70.0,
            "CST": 300.0,
            **columns,
        }
    )
    frame.to_csv(folder / "metadata.csv", index=False)
    return folder


def test_text_patient_and_eye_ids_survive_to_the_splits(tmp_path):
    patients = [f"01-0{i // 4:02d}" for i in range(16)] + ["0012"] * 4 + ["a9f3c1"] * 4
    eyes = ["OD", "OS"] * 12
    folder = clinic_folder(tmp_path, Patient_ID=patients, Eye_ID=eyes)
    params = params_for(tmp_path, source="local", local={"path": str(folder)})
    report = download(params)
    assert report["splits"]["train"]["patients"] == 6
    cols = Columns.from_params(params)
    build_cache(Path(params.data.raw_dir), params.preprocess, cols)
    _, index = open_cache(tmp_path / "cache")
    assert set(index["Patient_ID"]) == set(patients)  # leading zeros and dashes kept
    assert set(index["eye"]) == {"OD", "OS"}
    out, _, summary = make_splits(index, params.split, cols, seed=0)
    listed = [p for part in summary["splits"].values() for p in part["patients"]]
    assert sorted(listed) == sorted(set(patients))
    assert out.groupby("Patient_ID")["split"].nunique().max() == 1


def test_a_label_that_is_not_0_1_or_blank_names_file_column_and_line(tmp_path):
    folder = clinic_folder(tmp_path, Patient_ID=[1, 2, 3])
    frame = pd.read_csv(folder / "metadata.csv")
    frame.loc[1, "B4"] = 2
    frame.to_csv(folder / "metadata.csv", index=False)
    params = params_for(tmp_path, source="local", local={"path": str(folder)})
    with pytest.raises(SchemaError, match=r"metadata.csv line 3: label 'B4' is 2.0; expected 0, 1"):
        download(params)


def test_a_listed_image_that_is_absent_is_reported_with_its_path(tmp_path):
    # 1 of 60 is under the missing-file threshold (more stop the stage: test_download_edges)
    folder = clinic_folder(tmp_path, Patient_ID=[i // 4 for i in range(60)])
    (folder / "2.png").unlink()
    report = download(params_for(tmp_path, source="local", local={"path": str(folder)}))
    assert report["missing_files"] == {
        "count": 1,
        "first": [{"line": 4, "path": str(folder / "2.png")}],
    }
    assert report["splits"]["train"]["rows"] == 59


def test_hub_float_ids_and_patients_read_from_recovery_paths(tmp_path):
    train = [row(i, patient=i // 4) for i in range(16)]
    for r in train:
        r["Patient_ID"] = float(r["Patient_ID"])  # the hub viewer's float64
    test = [
        row(100 + i, patient=7)
        | {"Image": {"bytes": png(100 + i), "path": f"RECOVERY/OCT/01-0{i // 3:02d}/W0/OS/{i}.tif"}}
        for i in range(9)
    ]
    hub = write_hub_folder(tmp_path / "hub", {"train": train, "test": test}, float_ids=True)
    params = params_for(tmp_path, source="huggingface", huggingface={"repo_id": str(hub)})
    report = download(params)
    assert report["patients_from_paths"] == {"test": {"path_component": 2, "patients": 3}}
    assert report["splits"]["test"]["patients"] == 3 and not report["splits"]["test"]["warnings"]
    assert report["splits"]["train"]["patients"] == 4


def test_a_non_integral_id_is_an_error_naming_the_row(tmp_path):
    train = [row(i, patient=i // 4) for i in range(8)]
    train[5]["Patient_ID"] = 2.5
    test = [row(50 + i, patient=50) for i in range(2)]
    hub = write_hub_folder(tmp_path / "hub", {"train": train, "test": test}, float_ids=True)
    params = params_for(tmp_path, source="huggingface", huggingface={"repo_id": str(hub)})
    with pytest.raises(
        SchemaError, match=r"\[biomarker_detection/train\] row 5: column 'Patient_ID' is 2.5"
    ):
        download(params)
