"""Draw `docs/figures/synthetic_vs_real.png`: a real OLIVES B-scan beside synthetic ones.

Top row: the real B-scan (when `../shared` is present), a synthetic scan without biomarkers
and a zoom on both retinas. Rows below: one synthetic scan per biomarker, with the scan's full
label set in the title. Last row: real Kermany NORMAL and DME scans (`../shared`, stretched to
504x496 as the model's resize does) beside a synthetic scan of severe cystoid edema.

    python docs/make_synthetic_figure.py [--real PATH] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from olives.config import BIOMARKER_NAMES, BIOMARKERS, SyntheticSource
from olives.data import synthetic

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared/olives-reference/images/olives_bscan_504x496.tif"
KERMANY = REPO.parent / "shared/kermany-oct-sample/images"


def kermany(name: str) -> np.ndarray | None:
    """The first Kermany scan of class `name`, stretched to 504x496; None without ../shared."""
    paths = sorted(KERMANY.glob(f"{name}-*.jpeg"))
    if not paths:
        return None
    return np.asarray(Image.open(paths[0]).convert("L").resize((504, 496), Image.BILINEAR))


def find_example(
    sizes: synthetic.Sizes,
    seed: int,
    k: int | None,
    used: set[tuple[int, int]],
    min_vis: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The central positive scan of the first unused volume showing biomarker `k` clearly
    (None: a scan without any biomarker), with that scan's labels."""
    for vol in synthetic.iter_volumes(sizes, seed, "train"):
        if (vol.eye_id, vol.visit) in used:
            continue
        if k is None:
            wanted = ~vol.labels.any(axis=1)
        else:
            anatomy = synthetic.draw_anatomy(vol, sizes, synthetic.render_rng(vol, seed))
            if anatomy.vis[k] < min_vis:
                continue
            wanted = vol.labels[:, k]
        hits = np.nonzero(wanted)[0]
        if hits.size:
            used.add((vol.eye_id, vol.visit))
            j = int(hits[np.argmin(np.abs(hits - vol.scans // 2))])
            for i, img in enumerate(synthetic.volume_images(vol, sizes, seed)):
                if i == j:
                    return img, vol.labels[j]
    raise LookupError(f"no example for biomarker {k} in seed {seed}")


def title_for(labels: np.ndarray) -> str:
    on = [name for name, v in zip(BIOMARKERS, labels, strict=True) if v]
    return "labels: " + (" ".join(on) if on else "none")


def draw(real: np.ndarray | None, seed: int, out: Path) -> None:
    sizes = synthetic.resolve_preset(SyntheticSource(preset="default", patients=120))
    used: set[tuple[int, int]] = set()
    healthy, _ = find_example(sizes, seed, None, used)
    fig, axes = plt.subplots(4, 3, figsize=(12.6, 16.5), dpi=80)
    panels = [(real, "real OLIVES B-scan (504x496)"), (healthy, "synthetic, no biomarker")]
    for k, name in enumerate(BIOMARKERS):
        img, labels = find_example(sizes, seed, k, used)
        panels.append((img, f"{name} {BIOMARKER_NAMES[name]}\n{title_for(labels)}"))
    panels.insert(2, (None, ""))
    severe, labels = find_example(sizes, seed, 5, used, min_vis=0.85)
    panels += [
        (kermany("NORMAL"), "real Kermany NORMAL (stretched)"),
        (kermany("DME"), "real Kermany DME (stretched)"),
        (severe, f"synthetic, severe cystoid edema\n{title_for(labels)}"),
    ]
    for ax, (img, title) in zip(axes.flat, panels, strict=False):
        ax.set_axis_off()
        if img is None:
            continue
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
    _zoom_pair(axes.flat[2], real, healthy)
    fig.suptitle(
        f"Synthetic OLIVES B-scans (difficulty {sizes.difficulty}) next to real ones", fontsize=12
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buf).convert("L").save(out, optimize=True)  # grey figure: 1 byte per pixel
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


def _zoom_pair(ax: plt.Axes, real: np.ndarray | None, fake: np.ndarray) -> None:
    """Rows 90-330, columns 0-250 of each image, stacked: the layers side by side."""
    crops = [img[90:330, :250] for img in (real, fake) if img is not None]
    ax.imshow(np.vstack(crops), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(
        "zoom: real (top) / synthetic" if real is not None else "zoom: synthetic", fontsize=10
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs/figures/synthetic_vs_real.png")
    args = parser.parse_args()
    real = np.asarray(Image.open(args.real)) if args.real.is_file() else None
    draw(real, args.seed, args.out)


if __name__ == "__main__":
    main()
