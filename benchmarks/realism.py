"""Realism of the synthetic generator: synthetic B-scans against real Spectralis B-scans.

Renders a few dozen scans of a preset (as `benchmarks/synthetic.py` does, `iter_images`) and
compares them with the real OLIVES B-scan (`../shared/olives-reference`) and the 160 real
Kermany OCT2017 B-scans (`../shared/kermany-oct-sample`, CNV / DME / DRUSEN / NORMAL). Every
figure is taken where a model meets the image: grey [0, 1] intensities after the pipeline's
stretch resize to 128 x 128 (`olives.data.decode.resize`), except the axial grain spectrum,
which needs the native 496 rows (both sources sample depth at the same ~3.9 µm):

* intensity histogram: 1-Wasserstein distance and histogram intersection (64 bins) of the pooled
  intensities, and the mean intensity;
* speckle grain: radially averaged power spectrum of each image (128 px) and the axial spectrum
  of each column (native rows, inner retina and choroid separately: the grain's depth
  dependence), as log-power curves; distance = mean |difference| of the curves (decades);
* vitreous noise floor: mean and standard deviation of the band 4-15 rows (128 px) above the
  retina's surface (first row per column brighter than half the image's 99th percentile);
* with `--kid`: kernel inception distance on the packaged ImageNet EfficientNet-Lite0's pooled
  features (`model.pretrained: package`), x 1000.

A benchmark to run, not a test: nothing fits the generator to it automatically.

    python benchmarks/realism.py [--preset default] [--images 48] [--seed 0] [--kid]
        [--shared ../shared]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OLIVES_SCAN = "olives-reference/images/olives_bscan_504x496.tif"
KERMANY = "kermany-oct-sample"
SIZE = 128
BINS = 64


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def synthetic_images(preset: str, count: int, seed: int) -> list[np.ndarray]:
    """`count` uint8 scans of `preset`'s train split, spread over its volumes (every k-th)."""
    from olives.config import SyntheticSource
    from olives.data import synthetic

    sizes = synthetic.resolve_preset(SyntheticSource(preset=preset))
    step = max(1, sizes.scans_per_volume // 3)
    out = []
    for _, j, img in synthetic.iter_images(sizes, seed, "train"):
        if j % step == step // 2:
            out.append(img)
        if len(out) == count:
            break
    return out


def kermany_images(root: Path) -> tuple[list[np.ndarray], list[str]]:
    """The sample's scans (grey uint8, native size) and their classes."""
    table = pd.read_csv(root / "metadata.csv")
    classes = ("CNV", "DME", "DRUSEN", "NORMAL")
    images = [np.asarray(Image.open(root / f).convert("L")) for f in table["file_name"]]
    labels = [next(c for c in classes if row[c] == 1) for _, row in table.iterrows()]
    return images, labels


def small(img: np.ndarray) -> np.ndarray:
    """The pipeline's view: stretch-resized to 128 x 128, in [0, 1]."""
    from olives.data.decode import resize

    return resize(img, SIZE, SIZE, "stretch").astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# Statistics of a set of images
# ---------------------------------------------------------------------------------------------


def surface(img: np.ndarray) -> np.ndarray:
    """First row per column brighter than half the 99th percentile (smoothed): the ILM."""
    from scipy.ndimage import uniform_filter

    smooth = uniform_filter(img, size=5)
    bright = smooth > 0.5 * np.percentile(smooth, 99)
    return np.argmax(bright, axis=0)


def radial_spectrum(img: np.ndarray) -> np.ndarray:
    """Log10 radially averaged power spectrum (normalised to unit total power), 1..N/2 bins."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    h, w = f.shape
    yy, xx = np.indices(f.shape)
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    radial = np.bincount(r.ravel(), f.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    radial = radial[1 : min(h, w) // 2]
    return np.log10(radial / radial.sum() + 1e-12)


def axial_spectrum(img: np.ndarray, top: np.ndarray, offset: int, rows: int) -> np.ndarray | None:
    """Log10 mean power spectrum along depth of `rows`-row windows starting `offset` rows below
    the surface (native resolution), over the columns where the window fits."""
    h = img.shape[0]
    cols = [
        c for c in range(0, img.shape[1], 4) if top[c] + offset >= 0 and top[c] + offset + rows <= h
    ]
    if not cols:
        return None
    seg = np.stack([img[top[c] + offset : top[c] + offset + rows, c] for c in cols], axis=1)
    seg = seg[:, seg.std(axis=0) > 1e-3]  # flat columns (a blank registration wedge) say nothing
    if seg.shape[1] == 0:
        return None
    seg = seg - seg.mean(axis=0)
    power = (np.abs(np.fft.rfft(seg * np.hanning(rows)[:, None], axis=0)) ** 2).mean(axis=1)[1:]
    return np.log10(power / power.sum() + 1e-12)


def vitreous(img: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Pixels 4-15 rows above the surface (128 px image), where the column has them."""
    vals = [img[max(0, t - 15) : t - 3, c] for c, t in enumerate(top) if t >= 18]
    return np.concatenate(vals) if vals else np.zeros(0, np.float32)


def stats(images: Sequence[np.ndarray]) -> dict[str, object]:
    """Every per-set statistic the distances compare."""
    smalls = [small(im) for im in images]
    natives = [im.astype(np.float32) / 255.0 for im in images]
    tops_small = [surface(s) for s in smalls]
    # native surface: the 128 px surface scaled to the native rows (same rows, stretched)
    tops_native = [
        np.interp(
            np.linspace(0, SIZE - 1, n.shape[1]), np.arange(SIZE), t * n.shape[0] / SIZE
        ).astype(int)
        for n, t in zip(natives, tops_small, strict=True)
    ]
    inner = [axial_spectrum(n, t, 8, 48) for n, t in zip(natives, tops_native, strict=True)]
    deep = [axial_spectrum(n, t, 150, 48) for n, t in zip(natives, tops_native, strict=True)]
    vit = np.concatenate([vitreous(s, t) for s, t in zip(smalls, tops_small, strict=True)])
    pixels = np.concatenate([s.ravel() for s in smalls])
    return {
        "pixels": pixels,
        "means": np.array([s.mean() for s in smalls]),
        "radial": np.mean([radial_spectrum(s) for s in smalls], axis=0),
        "inner": np.mean([s for s in inner if s is not None], axis=0),
        "deep": np.mean([s for s in deep if s is not None], axis=0),
        "vitreous": vit,
        "smalls": smalls,
    }


def distances(a: dict[str, object], b: dict[str, object]) -> dict[str, float]:
    """Distances of set `a` from reference set `b`."""
    from scipy.stats import wasserstein_distance

    ha = np.histogram(a["pixels"], BINS, (0, 1))[0] / len(a["pixels"])
    hb = np.histogram(b["pixels"], BINS, (0, 1))[0] / len(b["pixels"])
    return {
        "hist_w1": float(wasserstein_distance(a["pixels"][::7], b["pixels"][::7])),
        "hist_intersection": float(np.minimum(ha, hb).sum()),
        "radial_psd": float(np.abs(a["radial"] - b["radial"]).mean()),
        "axial_psd_inner": float(np.abs(a["inner"] - b["inner"]).mean()),
        "axial_psd_deep": float(np.abs(a["deep"] - b["deep"]).mean()),
    }


def summary(s: dict[str, object]) -> dict[str, float]:
    vit = s["vitreous"]
    return {
        "mean": float(s["means"].mean()),
        "vitreous_mean": float(vit.mean()) if len(vit) else float("nan"),
        "vitreous_sd": float(vit.std()) if len(vit) else float("nan"),
    }


# ---------------------------------------------------------------------------------------------
# KID on ImageNet Lite0 features
# ---------------------------------------------------------------------------------------------


def features(smalls: Iterable[np.ndarray]) -> np.ndarray:
    """Pooled packaged-ImageNet Lite0 features of 128 px grey images."""
    import torch

    from olives.models.backbone import GreyInput, create_backbone

    model, config = create_backbone("tf_efficientnet_lite0", "package")
    grey = GreyInput(config["mean"], config["std"])
    x = torch.from_numpy(np.stack(list(smalls))[:, None])
    with torch.inference_mode():
        return model.eval()(grey(x)).numpy().astype(np.float64)


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018)."""
    d = a.shape[1]

    def k(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1.0) ** 3

    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float(
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
        + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
        - 2 * kab.mean()
    )


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--images", type=int, default=48, help="synthetic scans to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kid", action="store_true", help="also the Lite0 feature KID")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error(f"--images must be >= 2, got {args.images}")
    return args


def report(args: argparse.Namespace, shared: Path) -> None:
    start = time.perf_counter()
    syn = stats(synthetic_images(args.preset, args.images, args.seed))
    k_images, k_classes = kermany_images(shared / KERMANY)
    sets = {"kermany (160)": stats(k_images)}
    olives = shared / OLIVES_SCAN
    if olives.is_file():
        sets["olives (1)"] = stats([np.asarray(Image.open(olives).convert("L"))])
    print(f"synthetic: {args.images} scans of preset {args.preset!r}, seed {args.seed}")
    head = f"{'':24}{'mean':>7}{'vit mean':>9}{'vit sd':>8}"
    print(head)
    for name, s in [("synthetic", syn), *sets.items()]:
        v = summary(s)
        print(f"{name:24}{v['mean']:>7.3f}{v['vitreous_mean']:>9.3f}{v['vitreous_sd']:>8.3f}")
    print(
        f"\n{'synthetic against':24}{'hist W1':>8}{'hist ∩':>8}{'radial':>8}"
        f"{'axial in':>9}{'axial deep':>11}"
    )
    pairs = [(name, distances(syn, s)) for name, s in sets.items()]
    if "olives (1)" in sets:  # two real sources against each other: the scale of a real gap
        pairs.append(
            ("(real: olives-kermany)", distances(sets["olives (1)"], sets["kermany (160)"]))
        )
    for name, d in pairs:
        print(
            f"{name:24}{d['hist_w1']:>8.4f}{d['hist_intersection']:>8.3f}{d['radial_psd']:>8.3f}"
            f"{d['axial_psd_inner']:>9.3f}{d['axial_psd_deep']:>11.3f}"
        )
    if args.kid:
        fs, fk = features(syn["smalls"]), features(sets["kermany (160)"]["smalls"])
        normal = fk[[c == "NORMAL" for c in k_classes]]
        half = len(fk) // 2
        print(
            f"\nKID x1000 (Lite0 ImageNet features): synthetic-kermany {1000 * kid(fs, fk):.2f}; "
            f"synthetic-kermany NORMAL {1000 * kid(fs, normal):.2f}; "
            f"kermany half-half (floor) {1000 * kid(fk[::2][:half], fk[1::2][:half]):.2f}"
        )
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shared = Path(args.shared)
    if not (shared / KERMANY / "metadata.csv").is_file():
        print(f"skipped: {shared / KERMANY} not found")
        return 0
    report(args, shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
