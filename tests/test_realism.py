"""benchmarks/realism.py: its pure parts on made-up data, and one small run on ../shared."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import wasserstein_distance

from conftest import load_benchmark, png_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KEYS = {"hist_w1", "hist_intersection", "radial_psd", "axial_psd_inner", "axial_psd_deep"}


bench = load_benchmark("realism")


def random_images(seed: int, count: int = 3, shape: tuple[int, int] = (260, 200)) -> list:
    """`count` random grey uint8 scans, tall enough for the deep axial window."""
    return [
        np.asarray(Image.open(io.BytesIO(png_bytes(seed + i, shape))).convert("L"))
        for i in range(count)
    ]


def layered(tops: np.ndarray, height: int = 128) -> np.ndarray:
    """A dark vitreous whose value codes its row (0.001 x row), then a bright retina from
    row `tops[c]` of each column."""
    rows = np.arange(height)[:, None]
    img = np.broadcast_to(0.001 * rows, (height, len(tops))).astype(np.float32).copy()
    img[rows >= tops[None, :]] = 0.9
    return img


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def brute_force_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, written out pair by pair."""
    d = a.shape[1]

    def k(x, y) -> float:
        return (sum(float(p) * float(q) for p, q in zip(x, y, strict=True)) / d + 1.0) ** 3

    def within(s) -> float:
        pairs = list(itertools.permutations(range(len(s)), 2))
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)

    across = [k(x, y) for x, y in itertools.product(a, b)]
    return within(a) + within(b) - 2 * sum(across) / len(across)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 4)), rng.normal(0.3, 1.2, size=(6, 4))
    assert bench.kid(a, b) == pytest.approx(brute_force_kid(a, b), rel=1e-10)
    assert bench.kid(b, a) == pytest.approx(brute_force_kid(b, a), rel=1e-10)


def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    assert abs(bench.kid(a, b)) < 0.03
    assert bench.kid(a, b + 0.5) > 0.5


# ---------------------------------------------------------------------------------------------
# Distances between sets
# ---------------------------------------------------------------------------------------------


def test_a_set_against_itself_is_at_distance_zero():
    s = bench.stats(random_images(0))
    d = bench.distances(s, s)
    assert set(d) == KEYS
    assert d["hist_w1"] == 0.0
    assert d["hist_intersection"] == pytest.approx(1.0)
    assert d["radial_psd"] == d["axial_psd_inner"] == d["axial_psd_deep"] == 0.0


def test_brightening_by_a_constant_moves_w1_by_that_constant():
    images = [(im * 0.75).astype(np.uint8) for im in random_images(10)]  # room for +25
    c = 25
    a = bench.stats(images)
    b = bench.stats([im + np.uint8(c) for im in images])
    d = bench.distances(b, a)
    assert set(d) == KEYS
    assert np.isfinite(list(d.values())).all()
    # the stretch resize is linear, so the pipeline's view moves by c / 255 too (to rounding)
    assert d["hist_w1"] == pytest.approx(c / 255, abs=1 / 255)
    # the [::7] subsample gives what scipy gives on every pixel
    full = wasserstein_distance(b["pixels"], a["pixels"])
    assert d["hist_w1"] == pytest.approx(full, abs=2e-3)
    assert d["hist_intersection"] < 0.8  # 25 grey levels is 6 of the 64 bins
    assert d["radial_psd"] < 1e-3  # the grain does not change with the brightness


def test_a_different_set_is_at_a_positive_distance():
    a = bench.stats(random_images(20))
    b = bench.stats([gaussian_filter(im, 3) for im in random_images(30)])
    d = bench.distances(a, b)
    assert d["hist_w1"] > 0.05 and d["hist_intersection"] < 0.9
    assert d["radial_psd"] > 0.5


# ---------------------------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------------------------


def test_white_noise_has_a_flat_radial_spectrum_and_smoothing_drops_its_high_end():
    noise = np.random.default_rng(0).random((128, 128))
    flat, smooth = bench.radial_spectrum(noise), bench.radial_spectrum(gaussian_filter(noise, 2))
    assert flat.shape == smooth.shape == (63,)  # radii 1 .. N/2 - 1
    assert np.ptp(flat) < 1.0 < np.ptp(smooth)
    assert smooth[-10:].mean() < flat[-10:].mean() - 2  # decades of lost high-frequency power
    assert smooth[:3].mean() > flat[:3].mean()  # the power sits at low frequencies instead
    for spectrum in (flat, smooth):  # log10 of a spectrum normalised to unit total power
        assert np.sum(10.0**spectrum) == pytest.approx(1.0, abs=1e-6)


def test_the_axial_spectrum_peaks_at_the_frequency_of_the_depth_pattern():
    rows, cycles = 32, 5
    depth = np.arange(200)[:, None]
    img = 0.5 + 0.2 * np.sin(2 * np.pi * cycles * depth / rows) + np.zeros((1, 40))
    spectrum = bench.axial_spectrum(img, np.full(40, 10), 4, rows)
    assert spectrum.shape == (rows // 2,)  # rfft bins without the mean
    assert int(np.argmax(spectrum)) == cycles - 1


def test_the_axial_spectrum_is_none_where_no_window_fits_or_every_column_is_flat():
    rng = np.random.default_rng(0)
    img = rng.random((100, 40))
    assert bench.axial_spectrum(img, np.full(40, 60), 8, 48) is None  # past the bottom
    assert bench.axial_spectrum(img, np.full(40, 5), -10, 48) is None  # above the top
    assert bench.axial_spectrum(np.full((100, 40), 0.3), np.zeros(40, int), 8, 48) is None
    assert bench.axial_spectrum(img, np.full(40, 52), 0, 48) is not None  # ends on the last row


# ---------------------------------------------------------------------------------------------
# Surface and vitreous
# ---------------------------------------------------------------------------------------------


def test_the_surface_is_the_first_bright_row_of_each_column():
    cols = np.arange(96)
    tops = np.round(40 + 12 * np.sin(cols / 15)).astype(int)
    found = bench.surface(layered(tops))
    assert found.shape == tops.shape
    assert np.abs(found - tops).max() <= 2


def test_the_vitreous_is_the_band_above_the_surface():
    tops = np.array([60, 40, 17, 18, 100])
    img = layered(tops)
    vals = bench.vitreous(img, tops)
    # columns 0, 1, 3, 4: rows top-15 .. top-4 (value 0.001 x row); column 2 (top 17) has none
    expected = np.concatenate([0.001 * np.arange(t - 15, t - 3) for t in (60, 40, 18, 100)])
    assert vals == pytest.approx(expected, abs=1e-6)
    assert vals.max() < 0.1  # nothing of the bright retina
    assert bench.vitreous(img, np.full(5, 10)).shape == (0,)


def test_the_vitreous_above_a_found_surface_holds_no_retina():
    img = layered(np.full(64, 50))
    vals = bench.vitreous(img, bench.surface(img))
    assert vals == pytest.approx(np.tile(0.001 * np.arange(35, 47), 64), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def test_fewer_than_two_images_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--images", "1"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--images" in last and "got 1" in last


def test_skips_in_one_line_without_shared(tmp_path, capsys):
    assert bench.main(["--shared", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"skipped: {tmp_path / bench.KERMANY} not found"


@pytest.mark.skipif(
    not (SHARED / bench.KERMANY / "metadata.csv").is_file(), reason=f"{SHARED} not found"
)
def test_one_small_run_on_the_real_sample(capsys):
    assert bench.main(["--images", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "synthetic: 4 scans of preset 'default', seed 0"
    head = lines.index(next(line for line in lines if line.startswith("synthetic against")))
    rows = lines[head + 1 : lines.index("", head)]
    names = ["kermany (160)", "olives (1)", "(real: olives-kermany)"]
    assert [r[:24].strip() for r in rows] == names[: len(rows)] and rows
    for row in rows:  # W1, intersection, radial, axial inner, axial deep
        w1, inter, *psd = map(float, row[24:].split())
        assert 0 <= w1 <= 1 and 0 <= inter <= 1 and len(psd) == 3 and min(psd) >= 0
    assert not any("KID" in line for line in lines)
