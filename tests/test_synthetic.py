"""The synthetic OLIVES generator: schema, determinism, label statistics, structure, realism."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from olives.config import BIOMARKERS, SyntheticSource
from olives.data import synthetic as syn
from olives.data.schema import olives_features
from olives.data.synthetic import anatomy, parallel

TRAIN_PREVALENCE = syn.REAL_TRAIN_PREVALENCE
TEST_PREVALENCE = syn.RECOVERY_PREVALENCE
CORRELATIONS = syn.REAL_CORRELATIONS

SMALL = SyntheticSource(preset="tiny", width=64, height=64, shard_rows=7)


def _read(out: Path, split: str) -> pd.DataFrame:
    files = sorted((out / split).glob("part-*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, syn.generate(SMALL, out, seed=3)


@pytest.fixture(scope="module")
def big_train() -> pd.DataFrame:
    """Labels of 600 patients: tight enough to compare with the real statistics."""
    return syn.label_table(SyntheticSource(preset="full", patients=600), seed=0)


# --- presets and parameters ------------------------------------------------------------------


def test_presets_fill_none_fields_and_explicit_fields_win() -> None:
    full = syn.resolve_preset(SyntheticSource(preset="full"))
    assert (full.patients, full.test_patients, full.visits, full.scans_per_volume) == (
        87,
        40,
        2,
        49,
    )
    default = syn.resolve_preset(SyntheticSource())
    assert 16 <= default.scans_per_volume <= 25
    rows = default.patients * 1.1 * default.visits * default.scans_per_volume
    assert 1700 < rows < 2300
    assert syn.resolve_preset(SyntheticSource(preset="tiny", patients=9)).patients == 9


@pytest.mark.parametrize(
    ("field", "value"),
    [("difficulty", 1.5), ("patients", 0), ("width", 8), ("unlabeled_fraction", -0.1)],
)
def test_bad_parameters_name_the_parameter(field: str, value: float) -> None:
    cfg = dataclasses.replace(SyntheticSource(), **{field: value})
    with pytest.raises(ValueError, match=f"data.synthetic.{field}"):
        syn.resolve_preset(cfg)


# --- schema and files ------------------------------------------------------------------------


def test_parquet_schema_is_the_hub_schema(tiny_run: tuple[Path, dict]) -> None:
    out, summary = tiny_run
    want = olives_features().arrow_schema
    for split in syn.SPLITS:
        files = sorted((out / split).glob("part-*.parquet"))
        assert files and summary["splits"][split]["files"] == len(files)
        for f in files:
            assert pq.read_schema(f).equals(want, check_metadata=True)
        assert summary["splits"][split]["rows"] == sum(pq.read_metadata(f).num_rows for f in files)


def test_datasets_decodes_images(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out, _ = tiny_run
    files = [str(f) for f in sorted((out / "train").glob("*.parquet"))]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert ds.features == olives_features()
    img = ds[0]["Image"]
    assert img.size == (SMALL.width, SMALL.height) and img.mode == "L"


def test_png_encoder_round_trips() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 3), (64, 70)]:
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arr[: shape[0] // 2] = 0
        decoded = np.asarray(Image.open(io.BytesIO(syn.encode_png(arr))))
        np.testing.assert_array_equal(decoded, arr)
    with pytest.raises(ValueError, match="uint8"):
        syn.encode_png(np.zeros((4, 4), dtype=np.float32))


def test_summary_counts_match_files(tiny_run: tuple[Path, dict]) -> None:
    out, summary = tiny_run
    train, test = _read(out, "train"), _read(out, "test")
    assert summary["splits"]["train"]["patients"] == train["Patient_ID"].nunique() == 4
    assert summary["splits"]["test"]["patients"] == test["Patient_ID"].nunique() == 2
    assert summary["splits"]["train"]["labelled_rows"] == len(train)
    assert summary["splits"]["train"]["unlabeled_rows"] == 0 and summary["images_per_s"] > 0


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(
    tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = tiny_run
    syn.generate(SMALL, tmp_path / "again", seed=3)
    syn.generate(SMALL, tmp_path / "other", seed=4)
    for split in syn.SPLITS:
        first, again = _read(out, split), _read(tmp_path / "again", split)
        pd.testing.assert_frame_equal(first, again)
        other = _read(tmp_path / "other", split)
        assert [r["bytes"] for r in first["Image"]] != [r["bytes"] for r in other["Image"]]


def test_acquisition_randomisation_is_seeded_and_varied() -> None:
    """The per-volume acquisition look (averaging, framing, registration wedge) is drawn from
    the volume's own stream: the same seed gives the same pixels, and a handful of volumes
    already shows both looks and a wedge."""
    sizes = syn.resolve_preset(SyntheticSource(preset="tiny", patients=12, width=96, height=96))
    vols = list(syn.iter_volumes(sizes, seed=5, split="train"))
    anatomies = [syn.draw_anatomy(v, sizes, syn.render_rng(v, 5)) for v in vols]
    assert {a.device.top >= 0 for a in anatomies} == {True, False}  # light and heavy averaging
    assert any(a.device.wedge[0] != 0 for a in anatomies)
    for vol in vols[:4]:
        first = list(syn.volume_images(vol, sizes, seed=5))
        again = list(syn.volume_images(vol, sizes, seed=5))
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_files_match_the_label_table(tiny_run: tuple[Path, dict]) -> None:
    out, _ = tiny_run
    for split in syn.SPLITS:
        files, table = _read(out, split), syn.label_table(SMALL, seed=3, split=split)
        cols = [*BIOMARKERS, "BCVA", "CST", "Eye_ID", "Patient_ID"]
        pd.testing.assert_frame_equal(files[cols], table[cols], check_dtype=False)
        assert list(files["Image"].map(lambda r: r["path"])) == list(table["path"])


# --- worker processes ------------------------------------------------------------------------


def test_worker_count_does_not_change_the_bytes(tmp_path: Path) -> None:
    """Workers render volumes out of order; the parent writes them in order, so every file is
    byte-identical to the in-process run (unlabelled visits and shards that straddle volumes
    included)."""
    cfg = SyntheticSource(
        preset="tiny",
        width=128,
        height=124,
        patients=3,
        test_patients=2,
        shard_rows=7,
        unlabeled_fraction=0.5,
    )
    for workers in (1, 2):
        run = dataclasses.replace(cfg, num_workers=workers)
        summary = syn.generate(run, tmp_path / str(workers), seed=2, include_unlabeled=True)
        assert summary["workers"] == workers
    one = sorted(f.relative_to(tmp_path / "1") for f in (tmp_path / "1").rglob("*.parquet"))
    two = sorted(f.relative_to(tmp_path / "2") for f in (tmp_path / "2").rglob("*.parquet"))
    assert one == two and len(one) > 2
    for rel in one:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes(), rel


def test_one_worker_starts_no_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("num_workers=1 must render in-process")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", no_pool)
    cfg = dataclasses.replace(SMALL, num_workers=1, patients=1, test_patients=1, visits=1)
    assert syn.generate(cfg, tmp_path, seed=0)["rows"] == 2 * 5


def test_num_workers_resolution() -> None:
    assert parallel.resolve_workers(3) == 3
    assert parallel.resolve_workers(0) >= 1  # every core this process may use
    with pytest.raises(ValueError, match=r"data\.synthetic\.num_workers"):
        parallel.resolve_workers(-1)
    with pytest.raises(ValueError, match=r"data\.synthetic\.num_workers"):
        syn.generate(dataclasses.replace(SMALL, num_workers=-2), Path("unused"), seed=0)


def test_ordered_map_keeps_order_bounds_work_and_raises_worker_errors() -> None:
    items = list(range(-30, 0))
    assert list(parallel.ordered_map(abs, items, workers=2)) == [(i, -i) for i in items]
    consumed = []

    def source() -> Iterator[int]:
        for i in items:
            consumed.append(i)
            yield i

    lazy = parallel.ordered_map(abs, source(), workers=2, window=3)
    assert next(lazy) == (-30, 30)
    assert len(consumed) <= 4  # the window, plus the item that made room for the first result
    lazy.close()
    # math.sqrt(-1) fails in the worker: the parent gets the error instead of waiting forever
    with pytest.raises(ValueError, match="math domain error"):
        list(parallel.ordered_map(math.sqrt, [4.0, -1.0, 9.0], workers=2))


# --- unlabelled rows -------------------------------------------------------------------------


def test_unlabeled_rows_are_extra_train_visits_with_null_labels(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SMALL, unlabeled_fraction=1.0)
    summary = syn.generate(cfg, tmp_path, seed=5, include_unlabeled=True)
    train, test = _read(tmp_path, "train"), _read(tmp_path, "test")
    null = train[list(BIOMARKERS)].isna()
    unlabeled = null.all(axis=1)
    assert (null.any(axis=1) == unlabeled).all()  # all six null, or none
    assert unlabeled.sum() == summary["splits"]["train"]["unlabeled_rows"] > 0
    assert train.loc[unlabeled, "BCVA"].notna().mean() > 0.9
    assert not test[list(BIOMARKERS)].isna().any().any()
    # labelled rows do not change when unlabelled ones are added
    plain = syn.label_table(cfg, seed=5)
    labelled = train.loc[~unlabeled, list(BIOMARKERS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(labelled, plain[list(BIOMARKERS)], check_dtype=False)


# --- label statistics against the real data --------------------------------------------------


def test_prevalence_matches_real_train_and_recovery_test(big_train: pd.DataFrame) -> None:
    test = syn.label_table(SyntheticSource(preset="full", test_patients=400), seed=0, split="test")
    for name in BIOMARKERS:
        assert big_train[name].mean() == pytest.approx(TRAIN_PREVALENCE[name], abs=0.04), name
        assert test[name].mean() == pytest.approx(TEST_PREVALENCE[name], abs=0.04), name


def test_full_preset_is_olives_scale() -> None:
    table = syn.label_table(SyntheticSource(preset="full"), seed=1)
    assert table["Patient_ID"].nunique() == 87
    assert 85 <= table["Eye_ID"].nunique() <= 110
    assert 8_500 < len(table) < 10_500
    for name in BIOMARKERS:
        assert table[name].mean() == pytest.approx(TRAIN_PREVALENCE[name], abs=0.1), name


def test_correlations_match_real_data(big_train: pd.DataFrame) -> None:
    corr = big_train[[*BIOMARKERS, "BCVA", "CST"]].corr()
    for (a, b), target in CORRELATIONS.items():
        assert np.sign(corr.loc[a, b]) == np.sign(target), (a, b)
        assert corr.loc[a, b] == pytest.approx(target, abs=0.15), (a, b)
    assert abs(corr.loc["B4", "B1"]) < 0.15 and abs(corr.loc["B4", "B2"]) < 0.15


def test_clinical_values_look_like_olives(big_train: pd.DataFrame) -> None:
    bcva, cst = big_train["BCVA"].dropna(), big_train["CST"].dropna()
    assert bcva.mean() == pytest.approx(77.7, abs=3) and bcva.std() == pytest.approx(10.9, abs=3)
    assert cst.mean() == pytest.approx(335, abs=25) and cst.std() == pytest.approx(118, abs=30)
    assert cst.skew() > 0.5  # right-skewed like the real CST
    assert (bcva == bcva.round()).all() and bcva.between(35, 97).all()
    assert 0 < big_train["BCVA"].isna().mean() < 0.02
    per_volume = big_train.groupby(["Eye_ID", "visit"])[["BCVA", "CST"]].nunique(dropna=False)
    assert (per_volume <= 1).all().all()


def test_cst_rises_with_fluid_and_bcva_falls_with_cst(big_train: pd.DataFrame) -> None:
    """CST is measured on a retina that the B5 edema and B6 cysts thicken, and BCVA follows it:
    group means are monotone in the fluid's extent (fraction of positive scans of a volume)."""
    volumes = big_train.groupby(["Eye_ID", "visit"]).agg(
        cst=("CST", "first"), bcva=("BCVA", "first"), b5=("B5", "mean"), b6=("B6", "mean")
    )
    for extent in ("b5", "b6"):
        bins = pd.cut(volumes[extent], [-0.01, 0.0, 0.3, 0.6, 1.0])
        means = volumes.groupby(bins, observed=True)["cst"].mean()
        assert len(means) == 4 and means.is_monotonic_increasing, (extent, means)
    assert volumes.loc[volumes["b5"] == 0, "cst"].median() == pytest.approx(255, abs=30)
    quartiles = pd.qcut(volumes["cst"], 4)
    assert volumes.groupby(quartiles, observed=True)["bcva"].mean().is_monotonic_decreasing


def test_cst_is_the_thickness_of_the_rendered_retina() -> None:
    """The ILM of the rendered foveal scan rises by the CST that B5 edema adds, and CST does not
    depend on the image size (it is measured on the 504x496 reference geometry)."""
    sizes = syn.resolve_preset(SyntheticSource(preset="tiny", difficulty=0.0))
    for seed in range(3):
        vol = next(syn.iter_volumes(sizes, seed=seed, split="train"))
        j = min(int(vol.centre * vol.scans), vol.scans - 1)  # the foveal scan
        vol = dataclasses.replace(vol, centre=(j + 0.5) / vol.scans)  # its pit at the fovea
        csts, ilms = [], []
        for on in (False, True):
            labels = np.zeros_like(vol.labels)
            labels[:, 4] = on
            v = dataclasses.replace(vol, labels=labels, margins=np.full(vol.margins.shape, 0.2))
            an = syn.draw_anatomy(v, sizes, np.random.default_rng(seed + 1))
            img = syn.render_scan(v, an, j, np.random.default_rng(seed + 2))
            central = np.abs(np.arange(an.width) - an.xc) <= 42  # the central 1 mm
            ilms.append(_ilm_rows(img)[central].mean())
            csts.append(syn.measure_cst(v, an))
        added, risen = csts[1] - csts[0], (ilms[0] - ilms[1]) * 3.87
        assert 150 < csts[0] < 320 and added > 40
        # each scan jitters its visibility by 0.75-1.2 around the volume's, which CST uses
        assert 0.7 * added - 8 < risen < 1.25 * added + 8, (seed, added, risen)
    small, large = (dataclasses.replace(SMALL, width=w, height=w) for w in (64, 252))
    for split in syn.SPLITS:
        cst = syn.label_table(small, seed=1, split=split)["CST"]
        pd.testing.assert_series_equal(cst, syn.label_table(large, seed=1, split=split)["CST"])
        assert cst.nunique() > 1


# --- structure -------------------------------------------------------------------------------


def test_volume_structure_and_patient_split(big_train: pd.DataFrame) -> None:
    sizes = syn.resolve_preset(SyntheticSource(preset="full"))
    assert (big_train.groupby(["Eye_ID", "visit"]).size() == sizes.scans_per_volume).all()
    assert (big_train.groupby("Eye_ID")["Patient_ID"].nunique() == 1).all()
    test = syn.label_table(SyntheticSource(preset="full"), seed=0, split="test")
    assert set(big_train["Patient_ID"]).isdisjoint(test["Patient_ID"])
    assert set(big_train["Eye_ID"]).isdisjoint(test["Eye_ID"])
    labels = big_train.sort_values(["Eye_ID", "visit", "scan"])[list(BIOMARKERS)].to_numpy()
    same_volume = big_train.sort_values(["Eye_ID", "visit", "scan"])["scan"].to_numpy()[1:] > 0
    agree = (labels[1:] == labels[:-1]).all(axis=1)
    # neighbouring scans share labels far more often than random scan pairs do
    shuffled = labels[np.random.default_rng(0).permutation(len(labels))]
    assert agree[same_volume].mean() > 0.6 > (shuffled[1:] == shuffled[:-1]).all(axis=1).mean()


def test_fluid_is_central_in_the_volume(big_train: pd.DataFrame) -> None:
    n = big_train["scan"].max() + 1
    central = big_train["scan"].between(n // 3, 2 * n // 3)
    assert big_train.loc[central, "B6"].mean() > 1.5 * big_train.loc[~central, "B6"].mean()


# --- pixels ----------------------------------------------------------------------------------


def _render_toggled(
    k: int, difficulty: float = 0.0, seed: int = 0, size: tuple[int, int] = (248, 252)
) -> tuple[np.ndarray, np.ndarray]:
    """The same scan rendered without and with biomarker `k` (same speckle and anatomy)."""
    cfg = SyntheticSource(preset="tiny", difficulty=difficulty, height=size[0], width=size[1])
    sizes = syn.resolve_preset(cfg)
    vol = next(syn.iter_volumes(sizes, seed=seed, split="train"))
    labels = np.zeros_like(vol.labels)
    margins = np.full(vol.margins.shape, 0.2)
    images = []
    for on in (False, True):
        labels[:, k] = on
        v = dataclasses.replace(vol, labels=labels.copy(), margins=margins)
        an = syn.draw_anatomy(v, sizes, np.random.default_rng(seed + 1))
        images.append(syn.render_scan(v, an, vol.scans // 2, np.random.default_rng(seed + 2)))
    return images[0], images[1]


def _smooth(img: np.ndarray, k: int = 5) -> np.ndarray:
    """k x k box mean (edges padded): a grainy vitreous never reaches retinal levels."""
    pad = np.pad(img.astype(float), k // 2, mode="edge")
    rows = np.cumsum(np.pad(pad, ((1, 0), (0, 0))), axis=0)
    pad = (rows[k:] - rows[:-k]) / k
    cols = np.cumsum(np.pad(pad, ((0, 0), (1, 0))), axis=1)
    return (cols[:, k:] - cols[:, :-k]) / k


def _ilm_rows(img: np.ndarray) -> np.ndarray:
    """First row per column whose 5x5 mean is brighter than 100, below any blank registration
    wedge at the top: the inner retinal surface."""
    bright = _smooth(img) > 100
    start = np.argmax(~bright, axis=0)  # first row below a white wedge
    bright[np.arange(img.shape[0])[:, None] < start] = False
    return np.argmax(bright, axis=0)


def _thickness(img: np.ndarray) -> np.ndarray:
    """Retinal thickness per column read off the image: from the surface to the brightest row
    (the RPE) at least 15 % of the height below it, on a vertically smoothed copy."""
    smooth, ilm = _smooth(img, 3), _ilm_rows(img)
    rows = np.arange(img.shape[0])[:, None]
    below = np.where(rows > ilm + 0.15 * img.shape[0], smooth, -1.0)
    return np.argmax(below, axis=0) - ilm


@pytest.mark.parametrize("k", range(6))
def test_each_biomarker_changes_its_own_region(k: int) -> None:
    off, on = _render_toggled(k)
    diff = on.astype(int) - off.astype(int)
    changed = np.abs(diff) > 20
    assert changed.sum() >= 4, BIOMARKERS[k]
    rows, cols = np.nonzero(changed)
    above_ilm = rows < _ilm_rows(off)[cols]
    if BIOMARKERS[k] in ("B2", "B3", "B4"):  # vitreous findings
        assert above_ilm.mean() > 0.8
    elif BIOMARKERS[k] == "B1":  # bright foci inside the retina
        assert (~above_ilm).mean() > 0.8 and diff[changed].mean() > 0
    elif BIOMARKERS[k] == "B5":  # thicker retina: its surface rises
        assert (_ilm_rows(on) < _ilm_rows(off) - 2).mean() > 0.2
    else:  # B6: dark fluid spaces inside the (locally thickened) retina
        dark = diff[rows, cols] < 0
        assert dark.sum() >= 4 and (rows[dark] > _ilm_rows(on)[cols[dark]]).mean() > 0.9


def test_b5_thickens_the_imaged_retina_at_equal_cst() -> None:
    """B5 (diffuse thickening) is in the pixels, not only in CST: with B5 switched on for the
    scans away from the fovea only, CST (measured on the foveal scan) is unchanged, yet those
    scans show a thicker retina, read off the rendered image, at the default difficulty."""
    sizes = syn.resolve_preset(SyntheticSource(preset="tiny", height=248, width=252))
    gains = []
    for seed in range(4):
        vol = next(syn.iter_volumes(sizes, seed=seed, split="train"))
        fovea = min(int(vol.centre * vol.scans), vol.scans - 1)
        j = (fovea + 2) % vol.scans
        thick, csts = [], []
        for on in (False, True):
            labels = np.zeros_like(vol.labels)
            labels[j, 4] = on
            v = dataclasses.replace(vol, labels=labels, margins=np.full(vol.margins.shape, 0.1))
            an = syn.draw_anatomy(v, sizes, np.random.default_rng(seed + 1))
            img = syn.render_scan(v, an, j, np.random.default_rng(seed + 2))
            centre = np.abs(np.arange(an.width) - an.xc) <= 0.25 * an.width
            thick.append(float(np.median(_thickness(img)[centre])))
            csts.append(syn.measure_cst(v, an))
        assert csts[0] == csts[1]
        gains.append(thick[1] - thick[0])
    assert np.mean(gains) > 3 and min(gains) >= 0, gains


def test_severe_cavities_grow_the_painted_cysts_not_the_retina_cst_measures() -> None:
    """The most visible B6 volumes paint cysts up to 1 + SEVERE_GROWTH times larger (untreated
    DME's cavities), but lift the retina, and so CST, exactly as before."""
    sizes = syn.resolve_preset(SyntheticSource(preset="tiny"))
    vol = next(syn.iter_volumes(sizes, seed=0, split="train"))
    labels = np.zeros_like(vol.labels)
    labels[:, 5] = True
    vol = dataclasses.replace(vol, labels=labels)
    geo = syn.draw_geometry(vol, 504, 496, 0.5, np.random.default_rng(0))
    vis = geo.vis.copy()
    vis[5] = 1.0
    severe = dataclasses.replace(geo, vis=vis, severe=1.0 + anatomy.SEVERE_GROWTH)
    mild = dataclasses.replace(severe, severe=1.0)
    xs = np.arange(504, dtype=np.float32) - np.float32(geo.xc)
    j = vol.scans // 2
    big, small = anatomy.scan_cysts(vol, severe, j), anatomy.scan_cysts(vol, mild, j)
    ratio = np.array(big)[:, 2:] / np.array(small)[:, 2:]
    np.testing.assert_allclose(ratio, 1.0 + anatomy.SEVERE_GROWTH, rtol=1e-6)
    np.testing.assert_allclose(
        anatomy.cyst_lift(severe, xs, big), anatomy.cyst_lift(mild, xs, small), rtol=1e-5, atol=1e-5
    )
    assert syn.measure_cst(vol, severe) == pytest.approx(syn.measure_cst(vol, mild), rel=1e-6)


@pytest.mark.parametrize("k", range(6))
def test_difficulty_makes_biomarkers_subtler(k: int) -> None:
    """Summed pixel change caused by a biomarker, over a few volumes: easy >> hard."""

    def change(difficulty: float) -> float:
        pairs = [_render_toggled(k, difficulty, seed, (124, 126)) for seed in range(6)]
        return float(sum(np.abs(on.astype(int) - off.astype(int)).sum() for off, on in pairs))

    assert change(0.0) > 2 * change(1.0)


def test_scans_look_like_the_real_bscan(shared_dir: Path) -> None:
    real = np.asarray(Image.open(shared_dir / "olives-reference/images/olives_bscan_504x496.tif"))
    sizes = syn.resolve_preset(SyntheticSource(preset="tiny", patients=4, scans_per_volume=2))
    fakes = []  # heavily averaged volumes: the OLIVES look (the others look like Kermany's)
    for vol in syn.iter_volumes(sizes, seed=0, split="train"):
        if syn.draw_anatomy(vol, sizes, syn.render_rng(vol, 0)).device.top < 0:
            fakes += list(syn.volume_images(vol, sizes, seed=0))
    assert len(fakes) >= 4
    assert all(f.shape == real.shape == (496, 504) and f.dtype == np.uint8 for f in fakes)
    for fake in fakes:
        assert fake.mean() == pytest.approx(real.mean(), rel=0.5)
        assert (fake < 10).mean() == pytest.approx((real < 10).mean(), abs=0.2)
        assert real[:15].max() == 0 and (fake[:15] == 0).mean() > 0.7  # black (but a wedge)
        for img in (real, fake):  # bright retina band in the upper-middle of the image
            profile = img.mean(axis=1)
            band = np.nonzero(profile > 0.5 * profile.max())[0]
            assert band.min() > 0.15 * 496 and band.max() < 0.65 * 496
            assert 30 < band.max() - band.min() < 200
            assert profile[-100:-70].mean() < 5  # black below the choroid
        # the scale bar: a bright vertical tick in the lower-left corner
        assert (fake[440:480, 2:4] == 255).all() and (real[440:480, 2:4] > 200).all()
