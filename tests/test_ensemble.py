"""An ensemble of trained models is one model file: its probabilities are the average of the
members' calibrated probabilities (each member seeing its own standardisation), it survives a
save/load round trip, mismatched members are refused, and `olives predict` and the MLflow
model take it unchanged."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.special import expit
from torch import nn

from olives.cli import main
from olives.config import ModelConfig
from olives.data.prepare import clinical_features, fill_clinical
from olives.data.schema import Columns
from olives.io import file_sha256
from olives.models import BundleError, EnsembleNet, Member, ModelBundle, build_model, combine
from olives.models.bundle import FILE
from olives.models.ensemble import LOGIT_LIMIT
from olives.runtime import Runtime
from olives.serving.predictor import Predictor
from olives.serving.scans import read_scans

CPU = Runtime(torch.device("cpu"))
LABELS = ("B1", "B2", "B3")
CLINICAL = ("BCVA", "CST")
THRESHOLDS = (0.5, 0.4, 0.6)
MEMBER_STATS = [
    {
        "BCVA": {"mean": 70.0, "std": 10.0, "median": 72.0},
        "CST": {"mean": 300.0, "std": 50.0, "median": 290.0},
    },
    {
        "BCVA": {"mean": 60.0, "std": 15.0, "median": 66.0},
        "CST": {"mean": 340.0, "std": 30.0, "median": 350.0},
    },
]
ENSEMBLE_STATS = {
    "BCVA": {"mean": 65.0, "std": 12.0, "median": 69.0},
    "CST": {"mean": 320.0, "std": 40.0, "median": 310.0},
}
TEMPERATURES = [(1.0, 2.0, 0.5), (1.5, 0.7, 3.0)]


def member(k: int, **changes: object) -> ModelBundle:
    """A tiny concat model (clinical values matter) with random head and clinical weights."""
    torch.manual_seed(k)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="none", fusion="concat")
    model = build_model(cfg, len(LABELS), len(CLINICAL))
    nn.init.normal_(model.head.weight, std=0.5)
    nn.init.normal_(model.head.bias, std=0.5)
    bundle = ModelBundle(
        model=model.eval(),
        labels=LABELS,
        clinical=CLINICAL,
        thresholds=THRESHOLDS,
        clinical_stats=MEMBER_STATS[k],
        image_size=(32, 32),
        temperatures=TEMPERATURES[k],
        params={"data.source": "synthetic", "seed": k, "loss.name": "focal"},
    )
    return dataclasses.replace(bundle, **changes) if changes else bundle


@pytest.fixture(scope="module")
def members() -> list[ModelBundle]:
    return [member(0), member(1)]


@pytest.fixture(scope="module")
def ensemble(members) -> ModelBundle:
    return combine(members, (0.45, 0.5, 0.55), ENSEMBLE_STATS, member_hashes=["a" * 64, "b" * 64])


@pytest.fixture(scope="module")
def ensemble_dir(ensemble, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble")
    ensemble.save(folder)
    return folder


def features(raw: pd.DataFrame, stats: dict) -> torch.Tensor:
    """The model input of `raw` BCVA/CST as training builds it (`fill_clinical`)."""
    cols = Columns(image="", labels=LABELS, clinical=CLINICAL, patient="", eye=None)
    filled = fill_clinical(raw.copy(), {"clinical": stats}, cols)
    return torch.from_numpy(clinical_features(filled, CLINICAL))


def hand_average(members: list[ModelBundle], images: torch.Tensor, raw: pd.DataFrame):
    """Each member on its own standardisation, calibrated with its own temperatures, averaged."""
    probs = []
    with torch.no_grad():
        for m in members:
            logits = m.model(images, features(raw, m.clinical_stats)).double().numpy()
            probs.append(m.probabilities(logits))
    return np.mean(probs, axis=0)


def raw_clinical() -> pd.DataFrame:
    return pd.DataFrame(
        {"BCVA": [55.0, np.nan, 80.0, np.nan], "CST": [420.0, 260.0, np.nan, np.nan]}
    )


def test_probabilities_are_the_average_of_the_members_calibrated_probabilities(members, ensemble):
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    raw = raw_clinical()
    with torch.no_grad():
        logits = ensemble.model(images, features(raw, ENSEMBLE_STATS)).double().numpy()
    assert ensemble.temperatures == (1.0, 1.0, 1.0)
    expected = hand_average(members, images, raw)
    np.testing.assert_allclose(ensemble.probabilities(logits), expected, rtol=1e-5, atol=1e-6)
    # Clinical values matter: the same images with other values give other probabilities.
    other = raw.assign(BCVA=[30.0, 90.0, 40.0, 85.0])
    with torch.no_grad():
        moved = ensemble.model(images, features(other, ENSEMBLE_STATS)).numpy()
    assert np.abs(ensemble.probabilities(moved) - expected).max() > 1e-3


def test_confident_members_give_an_exact_average_and_a_finite_logit():
    """logit(mean p) in log space: exact where p rounds to 1 in float32, clamped, not inf."""
    cfg = ModelConfig(fusion="clinical", pretrained="none")
    nets = [build_model(cfg, 2, 1) for _ in range(2)]
    for net, bias in zip(nets, ([30.0, 1e6], [25.0, 1e6]), strict=True):
        nn.init.zeros_(net.head.weight)
        net.head.bias.data = torch.tensor(bias)
    stats = {"BCVA": {"mean": 0.0, "std": 1.0, "median": 0.0}}
    net = EnsembleNet([Member(n, (1.0, 1.0), stats) for n in nets], ("BCVA",), stats)
    with torch.no_grad():
        out = net(None, torch.zeros(1, 2)).double().numpy()[0]
    assert torch.sigmoid(torch.tensor(25.0)).item() == 1.0  # float32 p: its logit is inf
    assert out[0] == pytest.approx(-np.log(np.mean(expit([-30.0, -25.0]))), rel=1e-6)
    assert out[1] == LOGIT_LIMIT


def test_round_trip_gives_identical_outputs_and_the_digest_is_checked(
    ensemble, ensemble_dir, tmp_path
):
    loaded = ModelBundle.load(ensemble_dir)
    assert isinstance(loaded.model, EnsembleNet) and not loaded.model.training
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    clinical = features(raw_clinical().head(3), ENSEMBLE_STATS)
    ensemble.model.to(memory_format=torch.channels_last)  # ModelBundle.load's layout on a CPU
    with torch.no_grad():
        assert torch.equal(loaded.model(images, clinical), ensemble.model(images, clinical))
    assert loaded.thresholds == ensemble.thresholds and loaded.clinical_stats == ENSEMBLE_STATS
    assert loaded.params["ensemble.member_sha256"] == ["a" * 64, "b" * 64]
    assert loaded.params["ensemble.members"] == 2 and loaded.params["data.source"] == "synthetic"
    assert "seed" not in loaded.params  # the members disagree on it
    assert loaded.model.cfg.backbone == "tf_efficientnet_lite0"

    path = ensemble_dir / FILE
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    weights = load_file(str(path))
    assert weights and all(k.startswith(("members.0.", "members.1.")) for k in weights)
    key = next(k for k in weights if k.startswith("members.1.") and k.endswith("head.weight"))
    weights[key] = weights[key] + 1e-3
    save_file(weights, str(tmp_path / FILE), metadata=metadata)
    with pytest.raises(BundleError, match="do not match their recorded digest"):
        ModelBundle.load(tmp_path)

    meta = json.loads(metadata["olives"])
    meta["clinical_stats"]["BCVA"]["mean"] = 0.0  # the model's input stats no longer the bundle's
    save_file(load_file(str(path)), str(tmp_path / FILE), metadata={"olives": json.dumps(meta)})
    with pytest.raises(BundleError, match="input statistics"):
        ModelBundle.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("labels", ("B1", "B2", "B4")),
        ("clinical", ("BCVA", "CST_mm")),
        ("image_size", (48, 32)),
        ("resize", "crop"),
    ],
)
def test_members_that_disagree_are_refused_naming_what_differs(members, field, value):
    other = dataclasses.replace(members[1], **{field: value})
    with pytest.raises(BundleError, match=f"disagree on {field}: member 0 has .* member 1 has"):
        combine([members[0], other], THRESHOLDS, ENSEMBLE_STATS)
    with pytest.raises(BundleError, match="no statistics for"):
        combine(members, THRESHOLDS, {"BCVA": ENSEMBLE_STATS["BCVA"]})


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scans_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png(i))
    metadata = {"file_name": ["0.png", "1.png", "2.png"], "BCVA": [58, None, 83]}
    pd.DataFrame(metadata | {"CST": [410, 275, None]}).to_csv(folder / "metadata.csv", index=False)
    return folder


def member_average(members: list[ModelBundle], scans_dir: Path) -> np.ndarray:
    """The reference: each member through its own `Predictor` (its stats, its imputation)."""
    scans = list(read_scans([scans_dir], CLINICAL))
    tables = [Predictor(m, CPU, amp=False).predict(scans) for m in members]
    return np.mean([t[[f"{n}_prob" for n in LABELS]].to_numpy() for t in tables], axis=0)


def test_olives_predict_takes_the_ensemble_folder(members, ensemble_dir, scans_dir, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["predict", str(scans_dir), "--model", str(ensemble_dir), "--out", str(out)]) == 0
    table = pd.read_csv(out).sort_values("source").reset_index(drop=True)
    assert table["error"].isna().all() and table["BCVA_imputed"].tolist() == [0, 1, 0]
    got = table[[f"{n}_prob" for n in LABELS]].to_numpy()
    expected = member_average(members, scans_dir)
    np.testing.assert_allclose(got, expected, atol=3e-6)
    decided = (got >= np.array([0.45, 0.5, 0.55])).astype(int)
    np.testing.assert_array_equal(table[[f"{n}_pred" for n in LABELS]].to_numpy(), decided)
    digest = file_sha256(ensemble_dir / FILE)
    assert table["model"].map(lambda m: digest.startswith(m.removeprefix("sha256:"))).all()


def test_gradcam_overlays_work_for_the_ensemble(ensemble_dir, scans_dir, tmp_path):
    cams = tmp_path / "cams"
    args = ["predict", str(scans_dir / "0.png"), "--model", str(ensemble_dir)]
    assert main([*args, "--out", str(tmp_path / "o.csv"), "--gradcam", str(cams)]) == 0
    assert len(list(cams.glob("*.png"))) == len(LABELS)


def test_gradcam_explains_every_member_of_the_ensemble():
    """The ensemble's map is grad-cam's mean of each member's map of the ensemble's logit
    (its layers: one per member), not member 0's alone. Small heads: no member saturates, so
    each moves the ensemble's logit (a saturated member's gradient, and map, is ~0)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from olives.models.gradcam import _ImageOnly, explained_layers, grad_cam, target_layer

    members = [member(0), member(1)]
    for bundle in members:
        bundle.model.head.weight.data.mul_(0.01)
    net = combine(members, list(THRESHOLDS), ENSEMBLE_STATS, ["a", "b"], {}).model.eval()
    layers, _ = explained_layers(net)
    assert layers == [target_layer(m.backbone)[0] for m in net.members]
    torch.manual_seed(0)
    images = torch.rand(2, 1, 128, 128)
    clinical = torch.zeros(2, 2 * len(CLINICAL))
    got = grad_cam(net, images, clinical, 1)
    per_member = []
    for layer in layers:
        with GradCAM(model=_ImageOnly(net, clinical), target_layers=[layer]) as cam:
            per_member.append(cam(input_tensor=images, targets=[ClassifierOutputTarget(1)] * 2))
    # grad-cam rescales a one-layer map twice, hence the tolerance; the members differ by far more
    reference = scale_cam_image(np.mean(per_member, axis=0))
    np.testing.assert_allclose(got, np.clip(np.nan_to_num(reference), 0, 1), atol=0.02)
    assert min(np.abs(got - one).max() for one in per_member) > 0.2  # neither member's alone
    single = members[0].model
    assert explained_layers(single)[0] == [target_layer(single.backbone)[0]]


def test_the_mlflow_model_loads_the_ensemble(members, ensemble_dir, scans_dir):
    from olives.serving import OlivesModel

    served = OlivesModel()
    context = types.SimpleNamespace(artifacts={"bundle": str(ensemble_dir / FILE)}, model_config={})
    served.load_context(context)
    assert isinstance(served.predictor.bundle.model, EnsembleNet)
    request = pd.DataFrame(
        {
            "image": [base64.b64encode(png(i)).decode() for i in range(3)],
            "BCVA": [58.0, None, 83.0],
            "CST": [410.0, 275.0, None],
        }
    )
    answer = served.predict(None, request)
    assert answer["error"].isna().all()
    assert answer["model_sha256"].tolist() == [file_sha256(ensemble_dir / FILE)] * 3
    got = answer[[f"{n}_prob" for n in LABELS]].to_numpy(dtype=float)
    np.testing.assert_allclose(got, member_average(members, scans_dir), atol=3e-6)
