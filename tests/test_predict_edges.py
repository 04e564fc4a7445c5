"""`olives predict` on hostile inputs: every input gets exactly one row (a prediction, an error
or a warning), nothing non-regular is opened, clinical values and file names are checked."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from olives.cli import main
from olives.config import ModelConfig
from olives.data.decode import ImageLimits
from olives.models import ModelBundle, build_model
from olives.runtime import Runtime
from olives.serving import predictor as predictor_module
from olives.serving.predictor import Predictor
from olives.serving.scans import Scan, read_scans

CPU = Runtime(torch.device("cpu"))
LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
CLINICAL = ("BCVA", "CST")
STATS = {
    "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
    "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
}
BOMB = "ignore::PIL.Image.DecompressionBombWarning"  # PIL warns, then our limit refuses
SIZE = (48, 48)  # the model's input: a 40 x 40 scan is upsampled (a warning)


@pytest.fixture(autouse=True)
def deadline():
    """Nothing here may block (a FIFO opened for reading would): fail after 120 s instead."""

    def expired(signum, frame):
        raise TimeoutError("the test blocked (was a FIFO opened?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def png(seed: int, shape: tuple[int, int] = (64, 80), value: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(side: int = 13000) -> bytes:
    """A PNG whose header says side x side, with no pixel data worth the name."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def dicom(path: Path, frames: np.ndarray, **attributes: object) -> Path:
    """A multi-frame DICOM file as pydicom writes it; `Modality=None` leaves Modality out."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "OPT", "P7"
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(frames), frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.astype(np.uint8).tobytes()
    for name, value in attributes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion="concat")
    model = build_model(cfg, len(LABELS), len(CLINICAL))
    nn.init.normal_(model.head.weight, std=0.5)
    bundle = ModelBundle(
        model=model,
        labels=LABELS,
        clinical=CLINICAL,
        thresholds=(0.5, 0.4, 0.6, 0.5, 0.3, 0.5),
        clinical_stats=STATS,
        image_size=SIZE,
        temperatures=(1.0,) * len(LABELS),
    )
    folder = tmp_path_factory.mktemp("model")
    bundle.save(folder)
    return folder


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(ModelBundle.load(model_dir), CPU, batch_size=4, model_id="test")


def predict(model_dir: Path, inputs: list[Path], out: Path) -> pd.DataFrame:
    args = ["predict", *map(str, inputs), "--model", str(model_dir), "--out", str(out)]
    assert main(args) == 0
    return pd.read_csv(out, keep_default_na=False, na_values=[""])


def errors(table: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(e) else e for e in table["error"]]


def hostile_folder(root: Path) -> dict[str, str]:
    """A folder of every kind of entry, and what each must give: 'ok', 'warning: <text>' or
    'error: <text>' (text: a piece of the message)."""
    folder = root / "scans"
    (folder / "sub").mkdir(parents=True)
    outside = root / "elsewhere"
    outside.mkdir()
    (outside / "linked.png").write_bytes(png(9))
    expect = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expect[name] = outcome

    put("good.png", png(0), "ok")
    put("sub/good.png", png(1), "ok")
    put("small.png", png(2, (40, 40)), "warning: smaller than the model's 48 x 48 input")
    put("black.png", png(3, value=0), "warning: constant image (every pixel is 0)")
    put("tiny.png", png(4, (1, 1)), "error: a side under 32 holds no B-scan")
    put("empty.png", b"", "error: empty file")
    put("garbage.tif", b"not an image at all", "error: cannot decode image")
    put("bomb.png", huge_png_header(), "error: over the limit of 16,777,216 pixels")
    (folder / "README.txt").write_text("skipped, as before")
    (folder / "loop.png").symlink_to("loop.png")
    expect["loop.png"] = "error: symbolic link loop"
    (folder / "loop-no-suffix").symlink_to("loop-no-suffix")
    expect["loop-no-suffix"] = "error: symbolic link loop"
    (folder / "broken.png").symlink_to("missing.png")
    expect["broken.png"] = "error: broken link to missing.png"
    os.mkfifo(folder / "fifo.png")
    expect["fifo.png"] = "error: is a FIFO, not a regular file"
    (folder / "d.png").mkdir()
    expect["d.png"] = "error: is a directory, not a regular file"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.dcm"))
    server.close()
    expect["socket.dcm"] = "error: is a socket, not a regular file"
    dicom(folder / "ct.dcm", np.full((2, 64, 64), 50), Modality="CT")
    expect["ct.dcm"] = "error: DICOM modality 'CT' is not ophthalmic tomography (OPT)"
    frame = np.random.default_rng(5).integers(0, 255, (1, 64, 64))
    dicom(folder / "nomodality.dcm", frame, Modality=None)
    expect["nomodality.dcm"] = "warning: DICOM has no Modality"
    (folder / "link").symlink_to(outside)  # a linked folder is walked ...
    expect["link/linked.png"] = "ok"
    (folder / "sub" / "up").symlink_to("..")  # ... and a link back up is no loop
    return expect


def check_rows(table: pd.DataFrame, expect: dict[str, str], base: Path) -> None:
    """Exactly one row per expected entry, each with its outcome; probabilities and decisions
    only where there is no error."""
    sources = [str(Path(s).relative_to(base)) for s in table["source"]]
    assert sorted(sources) == sorted(expect), set(sources) ^ set(expect)
    for source, (_, row) in zip(sources, table.iterrows(), strict=True):
        outcome = expect[source]
        probs = row[[f"{n}_prob" for n in LABELS]]
        preds = row[[f"{n}_pred" for n in LABELS]]
        if outcome.startswith("error: "):
            assert outcome[7:] in str(row["error"]), (source, row["error"])
            assert source.split("/")[-1] in row["error"], row["error"]  # it names the path
            assert probs.isna().all() and preds.isna().all(), source
        else:
            assert pd.isna(row["error"]), (source, row["error"])
            assert probs.between(0, 1).all() and preds.isin([0, 1]).all(), source
            if outcome == "ok":
                assert pd.isna(row["warning"]), (source, row["warning"])
            else:
                assert outcome[9:] in row["warning"], (source, row["warning"])


@pytest.mark.filterwarnings(BOMB)
def test_every_entry_of_a_hostile_folder_gets_exactly_one_row(model_dir, tmp_path):
    expect = hostile_folder(tmp_path)
    table = predict(model_dir, [tmp_path / "scans"], tmp_path / "out.csv")
    check_rows(table, expect, tmp_path / "scans")


def test_every_path_the_user_names_gets_exactly_one_row(model_dir, tmp_path):
    expect = hostile_folder(tmp_path)
    folder = tmp_path / "scans"
    named = ["good.png", "loop.png", "broken.png", "fifo.png", "d.png", "socket.dcm", "ct.dcm"]
    named += ["empty.png", "tiny.png", "black.png", "nomodality.dcm", "missing.png"]
    expect["missing.png"] = "error: not found"
    table = predict(model_dir, [folder / n for n in named], tmp_path / "out.csv")
    check_rows(table, {n: expect[n] for n in named}, folder)
    assert [Path(s).name for s in table["source"]] == named  # in the order given


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_an_unreadable_file_is_an_error_row(model_dir, tmp_path):
    (tmp_path / "good.png").write_bytes(png(0))
    (tmp_path / "locked.png").write_bytes(png(1))
    (tmp_path / "locked.png").chmod(0)
    table = predict(model_dir, [tmp_path], tmp_path / "out.csv")
    locked = table[table["source"].str.endswith("locked.png")]
    assert len(table) == 2 and locked["error"].str.contains("cannot read").all()


def test_a_path_through_a_file_is_an_error_row(tmp_path):
    """An unreadable case that holds for root too: a path whose folder is a file."""
    (tmp_path / "scan.png").write_bytes(png(0))
    [scan] = read_scans([tmp_path / "scan.png" / "inner.png"], CLINICAL)
    assert scan.error == f"cannot read {tmp_path / 'scan.png' / 'inner.png'}: Not a directory"


def test_a_file_over_the_byte_cap_is_refused_from_its_size(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(png(0) + b"\0" * 5000)
    limits = ImageLimits(max_bytes=4000, max_pixels=4096 * 4096, min_side=32)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read whole"))
    [scan] = read_scans([big], CLINICAL, limits)
    assert scan.data is None and f"{big}: " in scan.error
    assert "bytes, over the limit of 4,000 bytes" in scan.error


def write_metadata(folder: Path, rows: list[tuple[str, object, object]]) -> None:
    table = pd.DataFrame(rows, columns=["file_name", "BCVA", "CST"])
    table.to_csv(folder / "metadata.csv", index=False)


def test_metadata_paths_stay_inside_and_clinical_values_are_checked(model_dir, tmp_path):
    folder = tmp_path / "imagefolder"
    folder.mkdir()
    (tmp_path / "x.png").write_bytes(png(7))  # exists, but outside the folder
    (folder / "ok.png").write_bytes(png(0))
    (folder / "loop.png").symlink_to("loop.png")
    rows = [
        ("ok.png", 70, 300),  # line 2
        ("../x.png", 70, 300),
        ("/etc/hostname", 70, 300),
        ("ok.png", 1e308, 300),
        ("ok.png", 70, -500),
        ("ok.png", 70, 1e39),
        ("ok.png", "inf", 300),
        ("ok.png", "-inf", None),
        ("ok.png", "n.a.", 300),
        ("loop.png", 70, 300),
        ("ok.png", None, None),  # line 12: missing values are imputed, not errors
    ]
    write_metadata(folder, rows)
    out = tmp_path / "out.csv"
    table = predict(model_dir, [folder], out)
    assert len(table) == len(rows)
    metadata = folder / "metadata.csv"
    errors = {
        3: "file name '../x.png' leads outside",
        4: "file name '/etc/hostname' is absolute",
        5: "BCVA = 1e+308 is outside its plausible range 0-100",
        6: "CST = -500 is outside its plausible range 50-1500",
        7: "CST = 1e+39 is outside its plausible range 50-1500",
        8: "BCVA is inf, not a finite number",
        9: "BCVA is -inf, not a finite number",
        10: "column 'BCVA' is 'n.a.', not a number",
        11: "symbolic link loop",
    }
    for line, row in zip(range(2, 2 + len(rows)), table.itertuples(), strict=True):
        if line in errors:
            assert row.error.startswith(f"{metadata} line {line}: "), row.error
            assert errors[line] in row.error, row.error
            assert np.isnan(row.B1_prob) and pd.isna(row.B1_pred)
        else:
            assert pd.isna(row.error) and 0 <= row.B1_prob <= 1
    assert table["BCVA_imputed"].iloc[[0, -1]].tolist() == [0, 1]
    with open(out, newline="") as handle:  # decisions are 0/1 or empty, never 1.0 or nan
        records = list(csv.DictReader(handle))
    cells = {r[f"{n}_pred"] for r in records for n in LABELS}
    assert cells <= {"0", "1", ""} and "" in cells


def test_the_predictor_checks_clinical_values_for_every_caller(predictor):
    """The served model builds `Scan`s itself: the `Predictor` refuses implausible values,
    and the other rows of the batch get the numbers they get alone."""
    good = Scan("good", data=png(0), clinical={"BCVA": 60.0, "CST": 350.0})
    bad = [
        Scan("huge", data=png(0), clinical={"BCVA": 1e308, "CST": 300.0}),
        Scan("neg", data=png(0), clinical={"BCVA": 60.0, "CST": -500.0}),
        Scan("inf", data=png(0), clinical={"BCVA": float("inf"), "CST": None}),
    ]
    missing = Scan("nan", data=png(0), clinical={"BCVA": float("nan"), "CST": None})
    table = predictor.predict([bad[0], good, bad[1], missing, bad[2]])
    alone = predictor.predict([good])
    assert errors(table) == [
        "huge: BCVA = 1e+308 is outside its plausible range 0-100",
        None,
        "neg: CST = -500 is outside its plausible range 50-1500",
        None,
        "inf: BCVA is inf, not a finite number",
    ]
    probs = [f"{n}_prob" for n in LABELS]
    np.testing.assert_allclose(table.loc[[1], probs].to_numpy(), alone[probs].to_numpy(), atol=1e-5)
    assert table.loc[[0, 2, 4], probs].isna().all().all()
    assert table.loc[[0, 2, 4], "B1_pred"].isna().all()
    assert table["BCVA_imputed"].tolist() == [0, 0, 0, 1, 0]


def test_a_non_finite_probability_is_an_error_never_a_decision(predictor, monkeypatch):
    real = Predictor._probabilities

    def broken(self, images, features):
        probs = real(self, images, features)
        probs[1, [0, 3]] = np.nan  # the second predicted row
        return probs

    monkeypatch.setattr(Predictor, "_probabilities", broken)
    scans = [Scan(f"s{i}", data=png(i)) for i in range(3)]
    table = predictor.predict(scans)
    assert errors(table) == [
        None,
        "s1: the model gave no finite probability for B1, B4",
        None,
    ]
    row = table.iloc[1]
    assert row[[f"{n}_prob" for n in LABELS]].isna().all()
    assert row[[f"{n}_pred" for n in LABELS]].isna().all()  # not 0 ("absent")
    assert str(table["B1_pred"].dtype) == "Int8"


def test_decoding_threads_are_bounded_per_call(model_dir, monkeypatch):
    used = []
    real = predictor_module.ThreadPoolExecutor

    def recording(workers):
        used.append(workers)
        return real(workers)

    monkeypatch.setattr(predictor_module, "ThreadPoolExecutor", recording)
    bundle = ModelBundle.load(model_dir)
    Predictor(bundle, CPU).pixels([Scan("a", data=png(0))])
    Predictor(bundle, CPU, decode_threads=1).pixels([Scan("a", data=png(0))])
    assert used == [min(4, os.cpu_count() or 1), 1]
    with pytest.raises(ValueError, match="decode_threads must be >= 1"):
        Predictor(bundle, CPU, decode_threads=0)


def test_predictor_limits_apply_to_bytes_and_pixels_from_any_caller(model_dir):
    limits = ImageLimits(max_bytes=10_000, max_pixels=100 * 100, min_side=32)
    predictor = Predictor(ModelBundle.load(model_dir), CPU, limits=limits)
    scans = [
        Scan("big", data=png(0, (200, 200))),  # ~40 KB of noise
        Scan("wide", data=png(1, (50, 300), value=5)),
        Scan("frame", pixels=np.zeros((400, 400), np.uint16)),
        Scan("narrow", pixels=np.zeros((10, 400), np.uint8)),
        Scan("fine", data=png(2, (64, 64))),
    ]
    found = errors(predictor.predict(scans))
    assert "over the limit of 10,000 bytes" in found[0]
    assert "over the limit of 10,000 pixels" in found[1] and "over the limit" in found[2]
    assert "a side under 32" in found[3] and found[4] is None


def test_dicom_headers_are_checked_before_any_pixel_is_read(tmp_path, monkeypatch):
    import pydicom

    def never(self):
        raise AssertionError("pixels were read")

    frames = np.zeros((3, 64, 64), np.uint8)
    cases = {
        "huge.dcm": ({"Rows": 13000, "Columns": 13000}, "over the limit of 16,777,216 pixels"),
        "tiny.dcm": ({"Rows": 1, "Columns": 1}, "a side under 32 holds no B-scan"),
        "frames.dcm": ({"NumberOfFrames": 10**6}, "DICOM volume is 1000000 frames of 64 x 64"),
        "noframes.dcm": ({"NumberOfFrames": 0}, "DICOM NumberOfFrames is 0, not a positive count"),
        "mr.dcm": ({"Modality": "MR"}, "DICOM modality 'MR' is not ophthalmic tomography"),
        "norows.dcm": ({"Rows": None}, "DICOM holds no image (no Rows or Columns)"),
    }
    for name, (attributes, _) in cases.items():
        dicom(tmp_path / name, frames, **attributes)
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(never))
    for name, (_, message) in cases.items():
        [scan] = read_scans([tmp_path / name], CLINICAL)
        assert scan.error.startswith(f"{tmp_path / name}: ") and message in scan.error, scan.error


def test_a_dicom_may_hold_max_bytes_per_frame(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (4, 64, 64)).astype(np.uint8)
    path = dicom(tmp_path / "volume.dcm", frames)
    size = path.stat().st_size
    per_frame = ImageLimits(max_bytes=size // 4 + 1, max_pixels=4096 * 4096, min_side=32)
    scans = list(read_scans([path], CLINICAL, per_frame))
    assert len(scans) == 4 and all(s.error is None and s.warning is None for s in scans)
    tight = ImageLimits(max_bytes=size // 4 - 100, max_pixels=4096 * 4096, min_side=32)
    [refused] = read_scans([path], CLINICAL, tight)
    assert f"{size:,} bytes, over the limit" in refused.error
    few = ImageLimits(4096, 4096 * 4096, 32, max_volume_pixels=3 * 64 * 64)
    [refused] = read_scans([path], CLINICAL, few)
    assert "DICOM volume is 4 frames of 64 x 64" in refused.error


def test_a_dicom_without_modality_is_predicted_with_a_warning(predictor, tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64)).astype(np.uint8)
    path = dicom(tmp_path / "v.dcm", frames, Modality=None)
    table = predictor.predict(list(read_scans([path], CLINICAL)))
    assert table["error"].isna().all() and table["B1_prob"].between(0, 1).all()
    assert (table["warning"] == "DICOM has no Modality: read as ophthalmic tomography (OPT)").all()


def test_a_metadata_csv_that_is_no_regular_file_is_one_error_row(tmp_path):
    (tmp_path / "a.png").write_bytes(png(0))
    os.mkfifo(tmp_path / "metadata.csv")
    [scan] = read_scans([tmp_path], CLINICAL)
    assert scan.error == f"{tmp_path / 'metadata.csv'} is a FIFO, not a regular file"
    (tmp_path / "metadata.csv").unlink()
    (tmp_path / "metadata.csv").symlink_to("metadata.csv")
    [scan] = read_scans([tmp_path], CLINICAL)
    assert scan.error == f"{tmp_path / 'metadata.csv'}: symbolic link loop"
