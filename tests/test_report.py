"""The report stage on synthesised inputs: sections, numbers against metrics.json, LaTeX,
galleries, per-patient table; Grad-CAM against a hand computation and a toy model."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from conftest import write_tiny_cache
from olives.config import ModelConfig, Params, from_dict
from olives.data.loader import load_splits
from olives.data.volumes import volume_table
from olives.evaluation.intervals import evaluate_predictions
from olives.evaluation.metrics import vip_phase2
from olives.evaluation.volumes import volume_metrics
from olives.io import EvaluateFiles
from olives.models import ModelBundle, build_model
from olives.models.fusion import BiomarkerNet
from olives.models.gradcam import grad_cam, overlay
from olives.reporting import figures
from olives.reporting.report import SECTION_TITLES, build_report, worst_cases
from olives.reporting.tables import fmt_ci, latex_escape, latex_table
from olives.stages.evaluate import write_curves, write_predictions

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")
CI_NUMBER = re.compile(r"(\d+\.\d{3,})†? \[(\d+\.\d{3,}), (\d+\.\d{3,})\]")


def make_params(
    root: Path, raw_report: str = "raw_report.json", out: str = "reports", model_dir: str = "models"
) -> Params:
    return from_dict(
        Params,
        {
            "seed": 5,
            "data": {
                "source": "synthetic",
                "raw_dir": str(root / "data/raw"),
                "report": str(root / "data" / raw_report),
            },
            "preprocess": {"height": 64, "width": 64, "cache_dir": str(root / "data/cache")},
            "split": {"out_dir": str(root / "data/split")},
            "model": {"pretrained": "none", "fusion": "concat"},
            "train": {
                "model_dir": str(root / model_dir),
                "report_dir": str(root / "reports/train"),
            },
            "evaluate": {"out_dir": str(root / "reports"), "bootstrap": 50},
            "report": {"out_dir": str(root / out), "gallery_size": 2},
            "tracking": {"enabled": False},
        },
    )


def make_bundle(fusion: str, thresholds: np.ndarray) -> ModelBundle:
    """A bundle as the train stage writes it, with a random (non-zero) head."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion=fusion)
    model = build_model(cfg, len(LABELS), 2)
    nn.init.normal_(model.head.weight, std=0.5)
    stats = {"BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0}}
    return ModelBundle(
        model=model,
        labels=LABELS,
        clinical=("BCVA", "CST"),
        thresholds=tuple(map(float, thresholds)),
        clinical_stats=stats | {"CST": {"mean": 300.0, "std": 50.0, "median": 290.0}},
        image_size=(64, 64),
        best_epoch=1,
        params={"loss.name": "focal", "seed": 5},
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Every input of the report stage, synthesised in about a second."""
    root = write_tiny_cache(tmp_path_factory.mktemp("report"), size=64, seed=1)
    params = make_params(root)
    test = load_splits(
        root / "data/cache", root / "data/split", LABELS, ("BCVA", "CST"), names=("test",)
    )["test"]
    rng = np.random.default_rng(0)
    probs = np.clip(0.35 * test.labels + 0.65 * rng.random(test.labels.shape), 0, 1)
    thresholds = np.full(len(LABELS), 0.5)
    out = root / "reports"
    bundle = make_bundle("concat", thresholds)
    write_predictions(EvaluateFiles(out), test, probs, bundle, "Patient_ID")
    with_volumes(out / "predictions.csv")
    write_curves(EvaluateFiles(out), test.labels, probs, LABELS)
    patients = test.frame["Patient_ID"].to_numpy()
    metrics = evaluate_predictions(
        test.labels, probs, thresholds, patients, LABELS, n_boot=50, seed=1
    )
    predictions = pd.read_csv(out / "predictions.csv")  # as evaluate does, on its volumes
    volumes = volume_table(predictions, LABELS, "Patient_ID")
    metrics["per_volume"] = volume_metrics(volumes, LABELS, thresholds, "Patient_ID", 50, seed=1)
    metrics["context"] = {"data_source": "synthetic", "loss": "focal", "seed": 5}
    (out / "metrics.json").write_text(json.dumps(metrics))
    history = [
        {
            "epoch": e,
            "train_loss": 1 / (e + 1),
            "val_loss": 1.1 / (e + 1),
            "val_macro_auroc": 0.5 + 0.1 * e,
            "val_macro_f1": 0.3 + 0.1 * e,
        }
        for e in range(3)
    ]
    (out / "train").mkdir(parents=True)
    pd.DataFrame(history).to_csv(out / "train/history.csv", index=False)
    figures.learning_curves(history, out / "train/learning_curves.png")
    bundle.save(root / "models")
    warning = "'Patient_ID' is constant (7) in split 'test'"
    (root / "data/raw_report.json").write_text(
        json.dumps({"splits": {"test": {"warnings": [warning]}}, "source": "synthetic"})
    )
    build_report(params)
    return root


def with_volumes(path: Path) -> None:
    """Give the scans OLIVES-style folders: two visits (V2, V10) of one eye per patient."""
    frame = pd.read_csv(path)
    visit = np.where(frame["row"] % 2 == 0, "V2", "V10")
    frame["path"] = [
        f"TRIAL/P{p}/{v}/OD/{Path(name).name}"
        for p, v, name in zip(frame["Patient_ID"], visit, frame["path"], strict=True)
    ]
    frame.to_csv(path, index=False)


def read_report(root: Path, out: str = "reports") -> str:
    return (root / out / "report.md").read_text()


def test_report_has_every_section_and_the_raw_warning(run):
    text = read_report(run)
    for title in SECTION_TITLES:
        assert title in text
    assert "'Patient_ID' is constant (7) in split 'test'" in text
    for link in (
        "train/learning_curves.png",
        "figures/report/roc.png",
        "figures/report/pr.png",
        "figures/report/reliability.png",
    ):
        assert f"]({link})" in text and (run / "reports" / link).is_file()


def test_main_results_numbers_equal_metrics_json(run):
    metrics = json.loads((run / "reports/metrics.json").read_text())
    text = read_report(run)
    checked = 0
    for label in LABELS:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} ("))
        found = CI_NUMBER.findall(line)
        m = metrics["per_label"][label]
        for (value, low, high), key in zip(
            found, ("auroc", "average_precision", "f1"), strict=True
        ):
            assert float(value) == pytest.approx(m[key], abs=5.01e-4)
            assert float(low) == pytest.approx(m[f"{key}_ci"][0], abs=5.01e-4)
            assert float(high) == pytest.approx(m[f"{key}_ci"][1], abs=5.01e-4)
            checked += 1
    for score, row in (("vip_phase1", "official baseline"), ("vip_phase2", "phase 2, 1st")):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| VIP Cup 2023 {row}"))
        value, low, high = CI_NUMBER.findall(line)[0]
        assert float(value) == pytest.approx(metrics[score], abs=5.01e-4)
        assert [float(low), float(high)] == pytest.approx(metrics[f"{score}_ci"], abs=5.01e-4)
    assert checked == 3 * len(LABELS)


def test_no_threshold_caution_where_the_decisions_hold(run):
    predictions = pd.read_csv(run / "reports/predictions.csv")
    for label in LABELS:  # the fixture decides at least half of each class right
        t, d = predictions[label], predictions[f"{label}_pred"]
        assert (d[t == 1] == 1).mean() >= 0.5 and (d[t == 0] == 0).mean() >= 0.5
    section = read_report(run).split(SECTION_TITLES[1])[1].split(SECTION_TITLES[2])[0]
    assert "is below 0.50" in section and "does not transfer" not in section


def test_reference_figures_are_not_comparable_unless_huggingface(run):
    """The source is the one `download` recorded, whatever `data.source` says now."""
    raw = json.loads((run / "data/raw_report.json").read_text()) | {"source": "huggingface"}
    (run / "data/raw_report_hf.json").write_text(json.dumps(raw))
    build_report(make_params(run, raw_report="raw_report_hf.json", out="report_hf"))
    synthetic, hub = read_report(run), read_report(run, "report_hf")
    assert "**Not comparable: this run used `data.source: synthetic`" in synthetic
    assert "Not comparable" not in hub
    for text in (synthetic, hub):
        assert "0.6256" in text and "0.8140" in text and "0.8527" in text


def test_one_gallery_png_per_biomarker_with_grad_cam(run):
    text = read_report(run)
    for label in LABELS:
        path = run / "reports/figures/report" / f"{label}_errors.png"
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0.05
        assert f"](figures/report/{label}_errors.png)" in text
    assert "Grad-CAM of that biomarker's logit" in text


def test_clinical_model_gets_plain_gallery_and_says_why(run):
    make_bundle("clinical", np.full(len(LABELS), 0.5)).save(run / "models_clin")
    build_report(make_params(run, out="report_clin", model_dir="models_clin"))
    text = read_report(run, "report_clin")
    assert "no Grad-CAM" in text
    assert (run / "report_clin/figures/report/B1_errors.png").is_file()


def latex_rows(tex: str) -> tuple[str, list[str]]:
    begin = re.findall(r"\\begin\{tabular\}\{([lrc]+)\}", tex)
    assert len(begin) == 1 and tex.count(r"\end{tabular}") == 1
    assert tex.index(r"\toprule") < tex.index(r"\bottomrule")
    body = tex[tex.index(r"\toprule") : tex.index(r"\bottomrule")]
    return begin[0], [ln for ln in body.splitlines() if ln.endswith(r"\\")]


def test_latex_tables_are_balanced_and_escaped(run):
    tables = run / "reports/tables"
    names = {p.stem for p in tables.glob("*.tex")}
    assert {"main_results", "data_summary", "compared_with", "per_patient_worst"} <= names
    assert {"operating_point", "volume_results", "volume_operating_point", "per_visit"} <= names
    for path in tables.glob("*.tex"):
        tex = path.read_text()
        assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
        align, rows = latex_rows(tex)
        assert len(rows) >= 2
        for row in rows:  # unescaped ampersands separate the cells
            assert len(re.findall(r"(?<!\\)&", row)) == len(align) - 1, (path.name, row)
        assert re.search(r"(?<!\\)[%_]", tex.split(r"\begin{tabular}")[1]) is None
    main = (tables / "main_results.tex").read_text()
    assert main.count(r"\midrule") == 2  # header rule, then above the averages
    assert r"\%" in (tables / "data_summary.tex").read_text()


def test_latex_helpers_escape_and_check_the_column_spec():
    assert latex_escape("a_b 5% & #1") == r"a\_b 5\% \& \#1"
    assert fmt_ci(0.91234, [0.8812, 0.9401]) == "0.912 [0.881, 0.940]"
    assert fmt_ci(None, None) == "n/a" and fmt_ci(0.5, None) == "0.500"
    with pytest.raises(ValueError, match="align 'lr' has 2 columns, the table has 3"):
        latex_table(pd.DataFrame({"a": [1], "b": [2], "c": [3]}), "x", "tab:x", align="lr")


def test_data_summary_counts_match_the_split_index(run):
    index = pd.read_parquet(run / "data/split/index.parquet")
    table = (run / "reports/tables/data_summary.md").read_text().splitlines()
    for name in ("train", "val", "test"):
        part = index[index["split"] == name]
        cells = [
            c.strip() for c in next(ln for ln in table if ln.startswith(f"| {name} ")).split("|")
        ]
        assert int(cells[2]) == part["Patient_ID"].nunique()
        assert int(cells[3]) == len(part[["Patient_ID", "eye"]].drop_duplicates())
        assert int(cells[4]) == len(part)
        assert cells[5] == f"{100 * part['B1'].mean():.1f} %"


def test_per_patient_table_agrees_with_vip_phase2(run):
    predictions = pd.read_csv(run / "reports/predictions.csv")
    table = pd.read_csv(run / "reports/tables/per_patient.csv")
    index = pd.read_parquet(run / "data/split/index.parquet")
    assert len(table) == index.loc[index["split"] == "test", "Patient_ID"].nunique()
    assert table["image_macro_f1"].is_monotonic_increasing  # worst first
    truth = predictions[list(LABELS)].to_numpy()
    decided = predictions[[f"{n}_pred" for n in LABELS]].to_numpy()
    patients = predictions["Patient_ID"].to_numpy()
    assert table["image_macro_f1"].mean() == pytest.approx(
        vip_phase2(truth, decided, patients), abs=1e-6
    )
    # Independent reference: scikit-learn per image, then per patient.
    per_image = [f1_score(t, d, average="macro") for t, d in zip(truth, decided, strict=True)]
    reference = pd.Series(per_image).groupby(patients).mean()
    got = table.set_index("patient")["image_macro_f1"]
    np.testing.assert_allclose(got.loc[reference.index], reference.to_numpy(), atol=1e-6)
    accuracy = pd.Series(truth[:, 2] == decided[:, 2]).groupby(patients).mean()
    np.testing.assert_allclose(
        table.set_index("patient")["B3_accuracy"].loc[accuracy.index],
        accuracy.to_numpy(),
        atol=1e-6,
    )
    assert table["images"].sum() == len(predictions)


def test_missing_input_is_an_error_naming_the_file(run, tmp_path):
    params = make_params(run)
    params = dataclasses.replace(
        params, evaluate=dataclasses.replace(params.evaluate, out_dir=str(tmp_path))
    )
    with pytest.raises(FileNotFoundError, match=r"metrics\.json: not found; run `olives evalua"):
        build_report(params)


# ---------------------------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------------------------


def test_grad_cam_matches_a_hand_computation():
    """The grad-cam package's Grad-CAM of our logit, by hand: the last feature stage's
    activations weighted by their mean gradient, ReLU, scaled to [0, 1], resized."""
    import cv2

    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="none", fusion="image"), 3, 0).eval()
    nn.init.normal_(model.head.weight, std=0.5)
    images = torch.rand(2, 1, 64, 64)
    cams = grad_cam(model, images, None, label=1)
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() == pytest.approx(1.0, abs=1e-5)
    layer = model.backbone.get_submodule(model.backbone.feature_info[-1]["module"])
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, out: seen.setdefault("a", out))
    logit = model(images.requires_grad_(True), None)[:, 1].sum()
    handle.remove()
    (grads,) = torch.autograd.grad(logit, seen["a"])
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * seen["a"]).sum(1)).detach().numpy()
    for k in range(2):
        scaled = (cam[k] - cam[k].min()) / (cam[k].max() - cam[k].min() + 1e-7)
        expected = cv2.resize(scaled, (64, 64))
        expected = (expected - expected.min()) / (expected.max() + 1e-7)
        np.testing.assert_allclose(cams[k], expected, atol=1e-4)


def test_grad_cam_with_clinical_fusion_and_overlay_range():
    torch.manual_seed(1)
    model = build_model(ModelConfig(pretrained="none", fusion="concat"), 6, 2)
    nn.init.normal_(model.head.weight, std=0.5)
    images = torch.rand(3, 1, 64, 48)
    cams = grad_cam(model, images, torch.randn(3, 4), label=5)
    assert cams.shape == (3, 64, 48) and np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    rgb = overlay((images[0, 0].numpy() * 255).astype(np.uint8), cams[0])
    assert rgb.shape == (64, 48, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    with pytest.raises(ValueError, match="label index 6 out of range"):
        grad_cam(model, images, torch.randn(3, 4), label=6)


def test_grad_cam_refuses_a_clinical_only_model():
    model = build_model(ModelConfig(pretrained="none", fusion="clinical"), 6, 2)
    with pytest.raises(ValueError, match="no image backbone"):
        grad_cam(model, torch.rand(1, 1, 32, 32), torch.zeros(1, 4), label=0)


class HalfBackbone(nn.Module):
    """A conv backbone that only sees one half of the image (the other half is zeroed)."""

    num_features = 8

    def __init__(self, side: str) -> None:
        super().__init__()
        self.feature_info = [{"module": "conv", "num_chs": 8}]
        self.side = side
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        half = x.shape[-1] // 2
        mask[..., :half] = 1 if self.side == "left" else 0
        mask[..., half:] = 0 if self.side == "left" else 1
        return torch.relu(self.conv(x * mask)).mean(dim=(2, 3))


@pytest.mark.parametrize("side", ["left", "right"])
def test_grad_cam_mass_lies_where_the_logit_looks(side):
    torch.manual_seed(2)
    grey = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    model = BiomarkerNet(ModelConfig(fusion="image", dropout=0.0), 1, 0, HalfBackbone(side), grey)
    nn.init.constant_(model.head.weight, 1.0)
    images = torch.rand(2, 1, 32, 32) * 0.3
    images[..., 8:24, 18:30] = 1.0  # the brightest content is in the right half
    cams = grad_cam(model, images, None, label=0)
    left = cams[..., :16].sum() / cams.sum()
    assert (left if side == "left" else 1 - left) > 0.9


def test_grad_cam_needs_a_timm_backbone():
    grey = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    plain.num_features = 4
    model = BiomarkerNet(ModelConfig(fusion="image"), 1, 0, plain, grey)
    with pytest.raises(ValueError, match="has no feature_info"):
        grad_cam(model, torch.rand(1, 1, 16, 16), None, label=0)


def test_worst_cases_order_ties_and_an_empty_kind(tmp_path):
    frame = pd.DataFrame({"row": [4, 1, 2, 3], "B1": [0, 0, 0, 0], "B1_prob": [0.9, 0.9, 0.2, 0.7]})
    cases = worst_cases(frame, "B1", 3)
    assert cases["fp"]["row"].tolist() == [1, 4, 3]  # highest first, ties by cache row
    assert cases["fn"].empty  # no positive at all
    path = figures.image_gallery(
        {"negatives": [(np.zeros((8, 8)), "a")], "positives": []}, 2, "t", tmp_path / "g.png"
    )
    assert mpimg.imread(path).ndim == 3


def test_vip_files_score_to_the_phase1_in_metrics(run):
    """`olives score reports/vip_submission.csv reports/vip_labels.csv` reproduces phase 1."""
    from olives.evaluation.scoring import score_files

    metrics = json.loads((run / "reports/metrics.json").read_text())
    result = score_files(run / "reports/vip_submission.csv", run / "reports/vip_labels.csv")
    assert result.n_matched == metrics["n_images"]
    assert result.vip_phase1 == pytest.approx(metrics["vip_phase1"])


def test_volume_results_equal_an_independent_groupby(run):
    predictions = pd.read_csv(run / "reports/predictions.csv")
    metrics = json.loads((run / "reports/metrics.json").read_text())
    section = read_report(run).split(SECTION_TITLES[2])[1].split(SECTION_TITLES[3])[0]
    grouped = predictions.groupby(predictions["path"].str.rsplit("/", n=1).str[0])
    truth = grouped[list(LABELS)].max().to_numpy()
    probs = grouped[[f"{n}_prob" for n in LABELS]].max().to_numpy()
    thresholds = np.array([metrics["per_label"][n]["threshold"] for n in LABELS])
    expected = evaluate_predictions(
        truth, probs, thresholds, grouped["Patient_ID"].first().to_numpy(), LABELS, 50, seed=1
    )
    assert f"{len(truth)} test volumes" in section
    for label in LABELS:
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {label} ("))
        m = expected["per_label"][label]
        if m["auroc"] is None:  # one class among this label's volumes
            assert line.split(" | ")[2] == "n/a"
            continue
        (auroc, low, high), *_ = CI_NUMBER.findall(line)
        assert float(auroc) == pytest.approx(m["auroc"], abs=5.01e-4)
        assert [float(low), float(high)] == pytest.approx(m["auroc_ci"], abs=5.01e-4)
    assert "| 1 (first) |" in section and "tables/per_eye.csv" in section
    assert "positive volumes come from" in section  # three patients: fewer than five
    for label in LABELS:  # three test patients: fewer than MIN_PATIENTS (5)
        assert f"**Caution, {label} (" in read_report(run)
