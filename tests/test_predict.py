"""`olives predict`: the training preprocessing on new scans, every input kind, bad input."""

from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from olives.cli import main
from olives.config import ModelConfig
from olives.data.decode import load_scan
from olives.data.loader import BatchSource, SplitData
from olives.data.schema import olives_features
from olives.data.shards import ShardWriter
from olives.errors import InputError
from olives.models import ModelBundle, build_model
from olives.models.inference import predict_logits
from olives.runtime import Runtime
from olives.serving.predictor import Predictor, aggregate
from olives.serving.scans import Scan, read_scans

CPU = Runtime(torch.device("cpu"))
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
STATS = {
    "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
    "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
}


def png(seed: int, shape: tuple[int, int] = (64, 80), bits: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = rng.integers(0, 2**bits, shape, dtype=dtype)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion="concat")
    model = build_model(cfg, len(LABELS), 2)
    nn.init.normal_(model.head.weight, std=0.5)
    bundle = ModelBundle(
        model=model,
        labels=LABELS,
        clinical=("BCVA", "CST"),
        thresholds=(0.5, 0.4, 0.6, 0.5, 0.3, 0.5),
        clinical_stats=STATS,
        image_size=(32, 32),
        temperatures=(1.0, 2.0, 0.5, 1.0, 1.5, 1.0),
    )
    folder = tmp_path_factory.mktemp("model")
    bundle.save(folder)
    return folder


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(ModelBundle.load(model_dir), CPU, batch_size=4, model_id="test")


def test_scans_are_preprocessed_exactly_as_in_training(predictor):
    blobs = [png(0), png(1, bits=16), png(2, shape=(100, 50))]
    clinical = [{"BCVA": 60.0, "CST": 350.0}, {"BCVA": None, "CST": 280.0}, {}]
    scans = [
        Scan(f"s{i}", data=b, clinical=c)
        for i, (b, c) in enumerate(zip(blobs, clinical, strict=True))
    ]
    table = predictor.predict(scans)

    pixels = np.stack([load_scan(b, 32, 32, "stretch") for b in blobs])
    z = [[-1.0, 1.0, 0, 0], [0.2, -0.4, 1, 0], [0.2, -0.2, 1, 1]]  # by hand: (v - mean) / std
    data = SplitData(
        pixels, np.arange(3), np.zeros((3, 6), np.float32), np.array(z, np.float32), pd.DataFrame()
    )
    bundle = predictor.bundle
    logits = predict_logits(bundle.model, BatchSource(data, CPU), CPU, 4, amp=False).numpy()
    expected = bundle.probabilities(logits)
    got = table[[f"{n}_prob" for n in LABELS]].to_numpy()
    np.testing.assert_allclose(got, expected.round(6), atol=1e-6)
    assert table["BCVA_imputed"].tolist() == [0, 1, 1] and table["CST_imputed"].tolist() == [
        0,
        0,
        1,
    ]
    decided = (expected >= bundle.threshold_array()).astype(int)
    np.testing.assert_array_equal(table[[f"{n}_pred" for n in LABELS]].to_numpy(), decided)


def test_a_folder_with_one_corrupt_file_goes_on(model_dir, tmp_path, caplog):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        (folder / f"scan{i}.png").write_bytes(png(i))
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out.csv"
    assert main(["predict", str(folder), "--model", str(model_dir), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == 4
    broken = table[table["source"].str.endswith("broken.png")]
    assert broken["error"].str.contains("broken.png").all() and broken["B1_prob"].isna().all()
    assert table.loc[table["error"].isna(), "B1_prob"].between(0, 1).all()
    assert (table["model"].str.startswith("sha256:")).all()

    (folder / "scan0.png").unlink()
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "empty.png").write_bytes(b"")
    assert main(["predict", str(only_bad), "--model", str(model_dir), "--out", str(out)]) == 1
    assert "no scan could be read" in caplog.text and "empty.png" in caplog.text


def test_imagefolder_metadata_gives_clinical_values_and_ids(predictor, tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    pd.DataFrame(
        {
            "file_name": ["0.png", "1.png", "2.png"],
            "BCVA": [65, None, "n.a."],
            "Patient_ID": ["01-037", "01-037", "hashed-9f"],
            "eye": ["OD", "OD", "OS"],
            "visit": ["W0", "W0", "W0"],
        }
    ).to_csv(tmp_path / "metadata.csv", index=False)
    scans = list(read_scans([tmp_path], ("BCVA", "CST")))
    assert [s.patient for s in scans] == ["01-037", "01-037", "hashed-9f"]
    assert (
        scans[2].error
        == f"{tmp_path / 'metadata.csv'} line 4: column 'BCVA' is 'n.a.', not a number"
    )
    table = predictor.predict(scans)
    assert table["BCVA"].tolist()[:2] == [65.0, pytest.approx(float("nan"), nan_ok=True)]
    assert table["BCVA_imputed"].tolist()[:2] == [0, 1]


def write_dicom(path: Path, frames: np.ndarray, laterality: str = "OD") -> str:
    """A multi-frame Ophthalmic Tomography DICOM file, as pydicom writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.PatientID, ds.ImageLaterality, ds.StudyDate = (
        "OPT",
        "P7",
        laterality,
        "20260101",
    )
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(frames), frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_dicom_volume_is_one_scan_per_frame(predictor, tmp_path, dtype):
    frames = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (5, 40, 60), dtype=dtype)
    uid = write_dicom(tmp_path / "volume.dcm", frames)
    scans = list(read_scans([tmp_path / "volume.dcm"], ("BCVA", "CST")))
    assert [s.index for s in scans] == list(range(5))
    assert {s.volume for s in scans} == {uid} and {s.eye for s in scans} == {"OD"}
    table = predictor.predict(scans)
    assert table["error"].isna().all()
    by_volume = aggregate(table, "volume", predictor.bundle)
    assert len(by_volume) == 1 and by_volume["scans"].item() == 5
    for name in LABELS:
        peak = table[f"{name}_prob"].max()
        assert by_volume[f"{name}_prob"].item() == peak
        assert by_volume[f"{name}_pred"].item() == int(table[f"{name}_pred"].max())


def test_hub_parquet_rows_carry_patient_and_volume(predictor, tmp_path):
    writer = ShardWriter(tmp_path / "hub", olives_features(), shard_rows=10)
    for i in range(3):
        row = {"Image": {"bytes": png(i), "path": f"TREX/P{i}/V1/OD/{i}.tif"}, "BCVA": 70.0}
        writer.write(row | {"CST": None, "Eye_ID": 1.0, "Patient_ID": 200 + i})
        row.update({n: 0.0 for n in LABELS})
    writer.close()
    table = predictor.predict(list(read_scans([tmp_path / "hub"], ("BCVA", "CST"))))
    assert table["patient"].tolist() == ["200", "201", "202"]
    assert table["volume"].tolist() == ["TREX/P0/V1/OD", "TREX/P1/V1/OD", "TREX/P2/V1/OD"]
    assert table["CST_imputed"].tolist() == [1, 1, 1] and table["error"].isna().all()


def test_real_olives_and_kermany_scans(shared_dir, model_dir, tmp_path):
    tiff = shared_dir / "olives-reference/images/olives_bscan_504x496.tif"
    kermany = shared_dir / "kermany-oct-sample"
    out = tmp_path / "real.csv"
    args = ["predict", str(tiff), str(kermany), "--model", str(model_dir), "--out", str(out)]
    assert main([*args, "--by", "volume"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 161 and table["error"].isna().all()
    assert pd.read_csv(out.with_suffix(".volume.csv"))["scans"].sum() == 161


def test_gradcam_writes_one_overlay_per_scan_and_biomarker(model_dir, tmp_path):
    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "b.png").write_bytes(png(1))
    cams = tmp_path / "cams"
    args = [str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--gradcam", str(cams)]
    assert (
        main(["predict", *args, "--model", str(model_dir), "--out", str(tmp_path / "o.csv")]) == 0
    )
    written = sorted(p.name for p in cams.glob("*.png"))
    assert len(written) == 2 * len(LABELS) and all(n.endswith(".png") for n in written)


def test_a_missing_or_foreign_model_is_one_line(tmp_path, caplog):
    (tmp_path / "x.png").write_bytes(png(0))
    (tmp_path / "foreign.safetensors").write_bytes(b"garbage")
    for model in (tmp_path / "nope", tmp_path / "foreign.safetensors"):
        args = ["predict", str(tmp_path / "x.png"), "--model", str(model)]
        assert main([*args, "--out", str(tmp_path / "o.csv")]) == 1
    assert "model file not found" in caplog.text and "not an olives model file" in caplog.text


def hub_parquet(folder: Path, paths: list[str], patients: list[int]) -> Path:
    writer = ShardWriter(folder, olives_features(), shard_rows=10)
    for i, (name, patient) in enumerate(zip(paths, patients, strict=True)):
        row = {"Image": {"bytes": png(i), "path": name}, "BCVA": 70.0, "CST": 300.0}
        writer.write(row | {"Eye_ID": 1.0, "Patient_ID": patient} | {n: 0.0 for n in LABELS})
    writer.close()
    return folder


def groups(volumes) -> set[frozenset[int]]:
    """Which rows share a volume, whatever the volumes are called."""
    frame = pd.DataFrame({"volume": list(volumes)})
    return {frozenset(rows) for rows in frame.groupby("volume").indices.values()}


@pytest.mark.parametrize(
    "paths",
    [
        ["a.png", "b.png", "c.png", "d.png"],  # bare file names: a volume each, never "."
        ["P1/V1/OD/0.tif", "P1/V1/OD/1.tif", "P1/V2/OD/0.tif", "x.tif"],
        ["P1\\V1\\OD\\0.tif", "P1/V1/OD/1.tif", "P1/V2/OD/2.tif", "P1/V2/OD/3.tif"],
    ],
)
def test_predict_and_the_report_group_the_same_rows_into_volumes(predictor, tmp_path, paths):
    from olives.data.volumes import volume_ids

    folder = hub_parquet(tmp_path / "hub", paths, [7] * len(paths))
    table = predictor.predict(list(read_scans([folder], ("BCVA", "CST"))))
    report = volume_ids(pd.DataFrame({"path": paths, "Patient_ID": 7}), "Patient_ID")
    assert isinstance(report, pd.DataFrame)
    assert groups(table["volume"]) == groups(report["volume"])
    by_volume = aggregate(table, "volume", predictor.bundle)
    assert sorted(by_volume["scans"]) == sorted(len(g) for g in groups(report["volume"]))


def test_a_folder_of_unrelated_scans_is_one_volume_only_when_the_user_says_so(predictor, tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    table = predictor.predict(list(read_scans([tmp_path], ("BCVA", "CST"))))
    assert table["volume"].isna().all()  # loose files state no volume
    assert aggregate(table, "volume", predictor.bundle)["scans"].tolist() == [1, 1, 1]
    pooled = aggregate(table, "volume", predictor.bundle, volume_from="folder")
    assert pooled["scans"].tolist() == [3]


def test_volume_ids_from_metadata_and_dicom_win_and_never_mix_patients(predictor, tmp_path):
    from olives.errors import InputError

    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    uid = write_dicom(tmp_path / "volume.dcm", np.zeros((2, 32, 40), np.uint8))
    metadata = {"file_name": [f"{i}.png" for i in range(4)], "volume": ["v1", "v1", "v2", "v2"]}
    pd.DataFrame(metadata | {"Patient_ID": ["p", "p", "q", "q"]}).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    scans = list(read_scans([tmp_path, tmp_path / "volume.dcm"], ("BCVA", "CST")))
    table = predictor.predict(scans)
    by_volume = aggregate(table, "volume", predictor.bundle, volume_from="folder")
    assert dict(zip(by_volume["volume"], by_volume["scans"], strict=True)) == {
        "v1": 2,
        "v2": 2,
        uid: 2,
    }
    table.loc[2, "patient"] = "p"  # v2 now holds two patients: not a volume
    with pytest.raises(InputError, match="volume v2 holds scans of several patients"):
        aggregate(table, "volume", predictor.bundle)


def test_bcva_and_cst_per_call_fill_what_the_input_does_not_give(model_dir, tmp_path):
    from olives.serving.predict import run

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    pd.DataFrame({"file_name": ["0.png", "1.png"], "BCVA": [80, None]}).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    given = run([str(tmp_path)], str(model_dir), tmp_path / "given.csv", bcva=60.0, cst=250.0)
    assert given["BCVA"].tolist() == [80.0, 60.0] and given["CST"].tolist() == [250.0, 250.0]
    assert given[["BCVA_imputed", "CST_imputed"]].to_numpy().sum() == 0
    pd.DataFrame({"file_name": ["0.png", "1.png"], "BCVA": [80, 60], "CST": 250}).to_csv(
        tmp_path / "metadata.csv", index=False
    )  # the same values from the metadata file instead
    listed = run([str(tmp_path)], str(model_dir), tmp_path / "listed.out.csv")
    probs = [f"{n}_prob" for n in LABELS]
    pd.testing.assert_frame_equal(given[probs], listed[probs])
    imputed = run([str(tmp_path / "2.png")], str(model_dir), tmp_path / "none.csv")
    assert imputed[["BCVA_imputed", "CST_imputed"]].to_numpy().tolist() == [[1, 1]]


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"bcva": 500.0}, "--bcva"), ({"cst": float("inf")}, "--cst"), ({"cst": -1.0}, "--cst")],
)
def test_per_call_clinical_values_are_checked_by_the_served_models_rule(
    model_dir, tmp_path, values, flag
):
    from olives.serving.predict import run
    from olives.serving.scans import clinical_values

    (tmp_path / "x.png").write_bytes(png(0))
    with pytest.raises(InputError) as raised:
        run([str(tmp_path / "x.png")], str(model_dir), tmp_path / "o.csv", **values)
    ((name, value),) = values.items()
    _, served = clinical_values({name.upper(): value}, [name.upper()])  # a served row's rule
    assert str(raised.value) == f"{flag}: {served}"
    assert not (tmp_path / "o.csv").exists()


def test_a_clinical_value_the_model_does_not_read_is_refused():
    from olives.serving.predict import check_clinical_inputs

    image_only = types.SimpleNamespace(clinical=())
    with pytest.raises(
        InputError, match=r"^--cst: this model does not read CST \(its inputs: image\)"
    ):
        check_clinical_inputs({"CST": 300.0}, image_only)
    check_clinical_inputs({}, image_only)


def test_nan_per_call_is_refused_as_olives_request_refuses_it():
    from olives.serving.predict import given_clinical
    from olives.serving.request import request_body

    with pytest.raises(InputError) as served:
        request_body([], {"BCVA": float("nan")})
    with pytest.raises(InputError, match=r"^--bcva: BCVA is nan, not a finite number$") as ours:
        given_clinical({"BCVA": float("nan"), "CST": None})
    assert str(ours.value) == f"--bcva: {served.value}"
    assert given_clinical({"BCVA": 70, "CST": None}) == {"BCVA": 70.0}
