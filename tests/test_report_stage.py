"""The evaluate stage, then the report stage, on a tiny project whose image paths name volumes
and eyes (`TRIAL/P<patient>/<visit>/<OD|OS>/`): per-volume metrics written once and shown as
written, cautions where the tuned threshold fails, eyes as OD / OS; the gallery's layout."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_tiny_cache
from olives.evaluation.intervals import evaluate_predictions
from olives.reporting import figures
from olives.reporting.report import SECTION_TITLES, build_report
from olives.reporting.results import main_results_frame
from olives.reporting.tables import markdown_table
from olives.stages import evaluate
from test_report import LABELS, make_bundle, make_params

# B1: every scan called positive (specificity 0); B2: none (sensitivity 0).
THRESHOLDS = np.array([0.0, 1.0, 0.5, 0.5, 0.5, 0.5])


def side(patient: int) -> str:
    return "OD" if patient % 2 == 0 else "OS"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """`olives stage evaluate` and `olives stage report` on a tiny cache with OLIVES-style paths."""
    root = write_tiny_cache(tmp_path_factory.mktemp("stage"), size=64, seed=2)
    split = root / "data/split/index.parquet"
    index = pd.read_parquet(split)
    visits = np.where(index["row"] % 2 == 0, "V1", "V2")
    index["path"] = [
        f"TRIAL/P{p}/{v}/{side(p)}/{r}.png"
        for p, v, r in zip(index["Patient_ID"], visits, index["row"], strict=True)
    ]
    index.to_parquet(split, index=False)
    make_bundle("clinical", THRESHOLDS).save(root / "models")  # no Grad-CAM: fast
    params = make_params(root)
    evaluate.run(params)
    build_report(params)
    return root


def outputs(root: Path) -> tuple[dict, pd.DataFrame, str]:
    reports = root / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    return metrics, pd.read_csv(reports / "predictions.csv"), (reports / "report.md").read_text()


def section(text: str, k: int) -> str:
    return text.split(SECTION_TITLES[k])[1].split(SECTION_TITLES[k + 1])[0]


def test_evaluate_writes_the_per_volume_metrics_the_report_shows(project):
    metrics, predictions, _ = outputs(project)
    block = metrics["per_volume"]
    grouped = predictions.groupby(predictions["path"].str.rsplit("/", n=1).str[0])
    assert (block["unit"], block["n_volumes"], block["n_scans"]) == (
        "volume",
        grouped.ngroups,
        len(predictions),
    )
    assert grouped.ngroups < len(predictions)  # volumes of several scans, not one per scan
    expected = evaluate_predictions(  # an independent group-by of predictions.csv
        grouped[list(LABELS)].max().to_numpy(),
        grouped[[f"{n}_prob" for n in LABELS]].max().to_numpy(),
        THRESHOLDS,
        grouped["Patient_ID"].first().to_numpy(),
        LABELS,
        n_boot=50,
        seed=5,
    )
    for label in LABELS:
        got, want = block["per_label"][label], expected["per_label"][label]
        for key in ("auroc", "f1", "sensitivity", "specificity"):
            assert got[key] == pytest.approx(want[key], abs=1e-6, nan_ok=True), (label, key)
            assert got[f"{key}_ci"] == pytest.approx(want[f"{key}_ci"], abs=1e-6), (label, key)
    assert block["macro"]["auroc"] == pytest.approx(expected["macro"]["auroc"], abs=1e-6)
    # The report prints these numbers as they are in metrics.json.
    shown = (project / "reports/tables/volume_results.md").read_text()
    assert shown == markdown_table(main_results_frame(block, LABELS))


def test_the_report_warns_where_the_tuned_threshold_fails(project):
    _, predictions, text = outputs(project)
    scans = section(text, 1)
    n_neg, n_pos = int((predictions["B1"] == 0).sum()), int((predictions["B2"] == 1).sum())
    assert (
        "- **Caution, B1 (IR HRF):** specificity at the tuned threshold is 0.000 "
        f"(0 of {n_neg} negative scans called negative; {n_neg} false positives): the "
        "threshold tuned on validation does not transfer to this test set."
    ) in scans
    assert (
        "- **Caution, B2 (Partially attached vitreous face):** sensitivity at the tuned "
        f"threshold is 0.000 (0 of {n_pos} positive scans called positive; {n_pos} false "
        "negatives)"
    ) in scans
    assert "is below 0.50" in scans  # the floor is stated
    for label in LABELS[2:]:  # flagged exactly when a rate is below the floor
        t, d = predictions[label], predictions[f"{label}_pred"]
        low = (d[t == 1] == 1).mean() < 0.5 or (d[t == 0] == 0).mean() < 0.5
        assert (f"**Caution, {label} (" in scans.split("### At the tuned")[1]) == low
    volumes = section(text, 2)
    assert "positive volumes called positive" in volumes.split("### Volumes at the tuned")[1]


def test_eyes_are_shown_as_od_or_os_as_the_paths_name_them(project):
    _, predictions, text = outputs(project)
    table = pd.read_csv(project / "reports/tables/per_eye.csv")
    patients = sorted(predictions["Patient_ID"].unique())
    assert sorted(table["eye"]) == sorted(f"{p} / {side(p)}" for p in patients)
    assert f"| {patients[0]} / {side(patients[0])} |" in section(text, 2)


def overlaps(fig) -> list[str]:
    """Captions that meet another caption, an image or the title, or leave the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    captions = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    images = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    title = fig._suptitle.get_window_extent(renderer)
    found = [
        f"captions {i}, {j}"
        for (i, a), (j, b) in combinations(enumerate(captions), 2)
        if a.overlaps(b)
    ]
    for i, caption in enumerate(captions):
        found += [f"caption {i} on an image" for b in images if caption.overlaps(b)]
        found += [f"caption {i} on the title"] if caption.overlaps(title) else []
        inside = fig.bbox.x0 <= caption.x0 and caption.x1 <= fig.bbox.x1
        inside &= fig.bbox.y0 <= caption.y0 and caption.y1 <= fig.bbox.y1
        found += [] if inside else [f"caption {i} outside the figure"]
    return found


def test_gallery_captions_never_overlap():
    long = "FP p=0.547\npatient RECOVERY-01-037 / OS\nGrad-CAM empty: no region supports a positive"
    wide = np.random.default_rng(0).random((40, 64, 3))
    rows = {
        "highest-scored negatives": [(wide, long)] * 4,
        "lowest-scored positives": [(wide, "TP p=0.441\npatient 1002")] * 3,
        "third": [(np.zeros((64, 40), np.uint8), long)] * 4,
    }
    fig = figures.gallery(rows, 4, "B1 (IR HRF): Grad-CAM overlay")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 11
    assert overlaps(fig) == []
    assert all(len(line) <= 40 for line in figures.wrap_caption(long).split("\n"))
