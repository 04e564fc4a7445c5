"""The teacher axis end to end on tiny data: k-fold teachers within a split's training patients
-> ensemble (one model file, thresholds tuned out of fold, members gated) -> pseudo-labels on
training patients' unlabelled scans only -> student (labelled + soft targets, TTA decided on
TTA logits), single baseline and the controls -> the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from olives.cli import main
from olives.config import Params, from_dict
from olives.data.cache import open_cache
from olives.data.loader import load_splits
from olives.data.prepare import clinical_features, read_index
from olives.errors import InputError
from olives.evaluation.metrics import tune_thresholds
from olives.io import PaperFiles, file_sha256, read_json
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.bundle import ModelBundle
from olives.runtime import Runtime
from olives.stages.paper import (
    control,
    data,
    ensemble,
    fold,
    init_cell,
    pseudo,
    single,
    student,
    teacher_table,
    teacher_track,
)
from olives.stages.paper.data import data_params
from olives.training.distill import KEEP

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def tiny_params(root: Path) -> Params:
    return from_dict(
        Params,
        {
            "data": {"synthetic": {"width": 64, "height": 64}},
            "train": {"batch_size": 16, "progress": False, "num_threads": 1},
            "evaluate": {"bootstrap": 10},
            "tracking": {"tracking_uri": f"sqlite:///{root}/store/mlflow.db"},
            "paper": {
                "splits": [0],
                "seeds": [0],
                "data": {"preset": "paper-small", "unlabeled_fraction": 2.0, "size": 32},
                "init": {"epochs": 1},
                "teacher": {"folds": [0, 1], "epochs": 1, "min_confidence": 0.01},
            },
        },
    )


@pytest.fixture(scope="module")
def axis(tmp_path_factory):
    """The chain for patient split 0, seed 0 with k = 2 (1 epoch, 32 px), run once in a
    scratch folder (with the protocol files, read from the working directory)."""
    root = tmp_path_factory.mktemp("teacher")
    mp = pytest.MonkeyPatch()
    protocols = Path("paper/protocol").resolve()
    mp.chdir(root)
    (root / "paper").mkdir()
    (root / "paper/protocol").symlink_to(protocols)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params(root)
    data.run(params)
    for k in (0, 1):
        fold.run(params, 0, 0, k)
    ensemble.run(params, 0, 0)
    pseudo.run(params, 0, 0)
    single.run(params, 0, 0)
    student.run(params, 0, 0)
    for kind in control.KINDS:
        control.run(params, kind, 0, 0)
    init_cell.run(params, "imagenet", "linear", 0, 0)  # the linear probe row
    teacher_table.run(params)
    yield root, params, PaperFiles(root / params.paper.out_dir).teachers(0, 0)
    mp.undo()


def reference_probabilities(bundle: ModelBundle, cache_dir: str, rows: pd.DataFrame) -> np.ndarray:
    """sigmoid(logit / T), computed by hand from the cache pixels and clinical features."""
    images, _ = open_cache(Path(cache_dir))
    pixels = torch.from_numpy(np.asarray(images[rows["row"].to_numpy()])).unsqueeze(1) / 255.0
    clinical = torch.from_numpy(clinical_features(rows, bundle.clinical))
    with torch.no_grad():
        logits = bundle.model.eval()(pixels.float(), clinical).double()
    return torch.sigmoid(logits / torch.tensor(bundle.temperatures, dtype=torch.float64)).numpy()


def test_k_fold_teachers_cover_every_labelled_training_scan_once_and_no_validation_patient(axis):
    root, params, seed = axis
    axis_index = read_index(root / data_params(params, 0).split.out_dir)
    pool = axis_index[axis_index["split"] == "train"]
    validation = set(axis_index.loc[axis_index["split"] == "val", "Patient_ID"])
    assert pool["Patient_ID"].nunique() >= 2 and validation
    val_patients, oofs = [], []
    for k in (0, 1):
        folder = seed / "folds" / f"f{k}"
        index = read_index(folder / "split")
        taught = index[index["split"].isin(["train", "val"])]
        assert not set(taught["Patient_ID"]) & validation  # no teacher sees them
        unseen = index["split"] == fold.VALIDATION
        assert set(index.loc[unseen, "Patient_ID"]) == validation
        test = index["split"] == "test"  # the pair's test split, unchanged
        assert set(index.loc[test, "image_id"]) == set(
            axis_index.loc[axis_index["split"] == "test", "image_id"]
        )
        val = index[index["split"] == "val"].reset_index(drop=True)
        val_patients.append(set(val["Patient_ID"]))
        oof = pd.read_csv(folder / "oof.csv")
        assert oof["image_id"].tolist() == val["image_id"].tolist() and (oof["fold"] == k).all()
        assert (oof[list(LABELS)].to_numpy() == val[list(LABELS)].to_numpy()).all()
        bundle = ModelBundle.load(folder / "model", "cpu")
        assert any(t != 1.0 for t in bundle.temperatures)  # calibrated, not plain sigmoids
        cache = root / data_params(params, 0).preprocess.cache_dir
        probs = oof[[f"{n}_prob" for n in LABELS]].to_numpy()
        np.testing.assert_allclose(probs, reference_probabilities(bundle, cache, val), atol=2e-6)
        oofs.append(oof)
    assert not val_patients[0] & val_patients[1]
    assert val_patients[0] | val_patients[1] == set(pool["Patient_ID"])
    both = pd.concat(oofs)
    assert both["image_id"].is_unique and set(both["image_id"]) == set(pool["image_id"])


def test_the_ensemble_averages_its_members_and_tunes_thresholds_out_of_fold(axis):
    root, params, seed = axis
    bundle = ModelBundle.load(seed / "ensemble/model", "cpu")
    members = [ModelBundle.load(seed / f"folds/f{k}/model", "cpu") for k in (0, 1)]
    test = load_splits(
        root / data_params(params, 0).preprocess.cache_dir,
        root / data_params(params, 0).split.out_dir,
        LABELS,
        params.clinical,
        names=("test",),
    )["test"]
    cell = ensemble.cell_params(params, 0, 0, "ensemble")
    cpu = Runtime.from_env()
    mean = np.mean([fold.predict_split(cell, m, test, cpu) for m in members], axis=0)
    np.testing.assert_allclose(fold.predict_split(cell, bundle, test, cpu), mean, atol=1e-5)
    oof = pd.concat([pd.read_csv(seed / f"folds/f{k}/oof.csv") for k in (0, 1)])
    tuned = tune_thresholds(oof[list(LABELS)].to_numpy(), oof[[f"{n}_prob" for n in LABELS]])
    pool = ensemble.unlabelled(cell)
    member_probs = np.stack([fold.predict_split(cell, m, pool, cpu) for m in members])
    np.testing.assert_allclose(bundle.thresholds, ensemble.rate_matched(member_probs, tuned))
    # on the pool, the ensemble calls as many scans positive as its members do on average
    called = (fold.predict_split(cell, bundle, pool, cpu) >= np.array(bundle.thresholds)).sum(0)
    expected = np.round((member_probs >= tuned).sum(axis=(0, 1)) / 2)
    np.testing.assert_allclose(called, expected, atol=1)
    metrics = read_json(seed / "ensemble/eval/metrics.json")
    assert metrics["context"]["model_sha256"] == file_sha256(seed / "ensemble/model" / MODEL_FILE)


def test_the_members_gate_names_a_member_that_stopped_at_epoch_0_or_scores_low(axis):
    _, _, seed = axis
    gate = pd.read_csv(seed / "ensemble" / ensemble.MEMBERS)
    assert gate["member"].tolist() == ["f0", "f1"]
    for row in gate.itertuples():
        failed = row.best_epoch == 0 or row.oof_macro_auroc < 0.6
        assert row.passed == (not failed)
        assert ("epoch 0" in str(row.reason)) == (row.best_epoch == 0)
    folders = [seed / "folds/f0", seed / "folds/f1"]
    strict = ensemble.member_gate(folders, LABELS, 1.01)  # no member reaches it
    assert not strict["passed"].any()
    assert strict["reason"].str.contains("out-of-fold macro AUROC").all()


def test_no_validation_or_test_patient_gets_a_pseudo_label(axis):
    root, params, seed = axis
    index = read_index(root / data_params(params, 0).split.out_dir)
    held_out = set(index.loc[index["split"].isin(["val", "test"]), "Patient_ID"])
    table = pd.read_parquet(seed / "pseudo.parquet")
    assert len(table) > 0 and not set(table["Patient_ID"]) & held_out
    assert (table["split"] == "unlabeled").all()
    eligible = index[(index["split"] == "unlabeled") & ~index["Patient_ID"].isin(held_out)]
    assert set(table["row"]) == set(eligible["row"])  # every eligible scan, no other
    assert table["confidence"].between(0, 1).all()
    assert (table["keep"] == (table["confidence"] >= 0.01)).all()
    assert table[list(LABELS)].stack().between(0, 1).all()


def test_the_student_learns_from_the_pseudo_labels_and_is_tested_with_and_without_tta(axis):
    _, params, seed = axis
    sha = {kind: file_sha256(seed / kind / "model" / MODEL_FILE) for kind in ("single", "student")}
    assert sha["single"] != sha["student"]  # same recipe and seed: only the pseudo rows differ
    plain = read_json(seed / "student/eval/metrics.json")["context"]
    views = read_json(seed / "student/eval_tta/metrics.json")["context"]
    assert plain["tta"] == [] and views["tta"] == ["hflip", "shift"]
    assert plain["model_sha256"] == sha["student"]
    # TTA is decided on the validation split's TTA logits: same weights, refitted decisions
    tta = ModelBundle.load(seed / "student/model_tta", "cpu")
    assert views["model_sha256"] == file_sha256(seed / "student/model_tta" / MODEL_FILE)
    cell = student.cell_params(params, 0, 0, "student")
    expected = student.tta_bundle(cell, ("hflip", "shift"))
    np.testing.assert_allclose(tta.thresholds, expected.thresholds)
    np.testing.assert_allclose(tta.temperatures, expected.temperatures)
    plain_bundle = ModelBundle.load(seed / "student/model", "cpu")
    assert tta.temperatures != plain_bundle.temperatures
    weights = zip(
        tta.model.state_dict().values(), plain_bundle.model.state_dict().values(), strict=True
    )
    for a, b in weights:
        assert torch.equal(a, b)


def test_the_controls_learn_from_what_they_say(axis):
    root, params, seed = axis
    ensemble_labels = pd.read_parquet(seed / "pseudo.parquet")
    shuffled = pd.read_parquet(seed / "shuffled/labels/pseudo.parquet")
    assert shuffled["row"].tolist() == ensemble_labels["row"].tolist()  # the same images
    moved = shuffled[list(LABELS)].to_numpy()
    assert sorted(map(tuple, moved)) == sorted(map(tuple, ensemble_labels[list(LABELS)].to_numpy()))
    assert not np.array_equal(moved, ensemble_labels[list(LABELS)].to_numpy())
    own = pd.read_parquet(seed / "self_training/labels/pseudo.parquet")
    assert own["row"].tolist() == ensemble_labels["row"].tolist()
    single_bundle = ModelBundle.load(seed / "single/model", "cpu")
    cell = student.cell_params(params, 0, 0, "single")
    pool = ensemble.unlabelled(cell)
    probs = fold.predict_split(cell, single_bundle, pool, Runtime.from_env())
    np.testing.assert_allclose(own[list(LABELS)].to_numpy(), probs, atol=1e-6)
    rows = read_json(seed / "same_steps/labels/rows.json")["rows_per_epoch"]
    index = read_index(root / data_params(params, 0).split.out_dir)
    assert rows == (index["split"] == "train").sum() + ensemble_labels[KEEP].sum()
    shas = {k: file_sha256(seed / k / "model" / MODEL_FILE) for k in (*control.KINDS, "student")}
    assert len(set(shas.values())) == 4


def test_a_student_without_pseudo_labels_is_refused(tmp_path):
    path = tmp_path / "pseudo.parquet"
    pd.DataFrame({"row": [1, 2], "confidence": [0.1, 0.2], "keep": [False, False]}).to_parquet(path)
    with pytest.raises(InputError, match=r"none of its 2 .*paper\.teacher\.min_confidence = 0\.5"):
        student.kept_rows(path, 0.5)
    pd.DataFrame({"keep": [True, False]}).to_parquet(path)
    assert student.kept_rows(path, 0.5) == 1


def test_predict_takes_the_ensemble_and_the_student(axis, tmp_path):
    root, params, seed = axis
    images, _ = open_cache(root / data_params(params, 0).preprocess.cache_dir)
    Image.fromarray(np.asarray(images[0])).save(tmp_path / "scan.png")
    for kind in ("ensemble", "student"):
        out = tmp_path / f"{kind}.csv"
        model = str(seed / kind / "model")
        assert (
            main(["predict", str(tmp_path / "scan.png"), "--model", model, "--out", str(out)]) == 0
        )
        table = pd.read_csv(out)
        assert table[[f"{n}_prob" for n in LABELS]].stack().between(0, 1).all()
        assert table["model_sha256"].item() == file_sha256(seed / kind / "model" / MODEL_FILE)


def test_the_table_has_every_method_and_control_and_compares_by_the_protocol(axis):
    root, params, _ = axis
    out = root / params.paper.out_dir
    text = (out / "teacher.md").read_text()
    runs = pd.read_csv(out / "teacher_runs.csv")
    assert runs["method"].tolist() == [
        "single",
        "single (same steps)",
        "self-training",
        "shuffled pseudo-labels",
        "ensemble",
        "student",
        "student + TTA",
        "linear probe",
    ]
    assert (runs["split"] == 0).all() and (runs["seed"] == 0).all()
    protocol_at = text.index("**Protocol**")
    assert protocol_at < text.index("| metric | method") < text.index("### Headline metrics")
    assert "Post hoc" in text and "rate-matched" in text
    paired = pd.read_csv(out / "teacher_paired.csv")
    primary = paired[paired["role"] == "primary"]
    assert list(zip(primary["method"], primary["reference"], strict=True)) == [
        ("ensemble", "single"),
        ("student", "single"),
        ("student", "single (same steps)"),
        ("student", "self-training"),
        ("student", "shuffled pseudo-labels"),
        ("student", "linear probe"),
        ("student + TTA", "student"),
    ]
    assert (paired["pairs"] == 1).all()  # one pair: never a verdict
    assert (paired["verdict"] == "no clear difference").all()
    assert "### Ensemble members' quality gate" in text


def test_the_runs_of_a_seed_group_in_mlflow(axis):
    from mlflow import MlflowClient

    root, _, _ = axis
    client = MlflowClient(f"sqlite:///{root}/store/mlflow.db")
    experiment = client.get_experiment_by_name("olives-biomarkers-paper")
    group = "tags.`olives.group` = 'teacher-p0-s0'"
    runs = client.search_runs([experiment.experiment_id], group)
    assert len(runs) == 8  # two teachers, the ensemble, single, student and three controls
    assert sorted(r.data.tags["olives.fold"] for r in runs if "olives.fold" in r.data.tags) == [
        "0",
        "1",
    ]
    assert all(
        "best_val_macro_auroc" in r.data.metrics for r in runs if "olives.fold" in r.data.tags
    )
    assert not client.search_model_versions("name='olives-biomarkers'")  # never the champion's
    ensemble_run = next(r for r in runs if r.info.run_name == "teacher-p0-s0-ensemble")
    assert "test_macro_auroc" in ensemble_run.data.metrics


@pytest.fixture(scope="module")
def registered(axis):
    """`teacher_track` run twice on the axis's store: the second run must add nothing."""
    _, params, _ = axis
    first = teacher_track.run(params)
    assert teacher_track.run(params) == first
    return first


def test_teacher_track_registers_each_ensemble_and_student_once_with_a_pair_alias(axis, registered):
    from mlflow import MlflowClient

    root, _, seed = axis
    client = MlflowClient(f"sqlite:///{root}/store/mlflow.db")
    assert [(r["name"], r["version"]) for r in registered] == [
        ("olives-biomarkers-ensemble", "1"),
        ("olives-biomarkers-student", "1"),
    ]
    for kind in ("ensemble", "student"):
        name = f"olives-biomarkers-{kind}"
        assert len(client.search_model_versions(f"name='{name}'")) == 1
        version = client.get_model_version_by_alias(name, "p0-s0")
        tags = version.tags
        assert tags["model_sha256"] == file_sha256(seed / kind / "model" / MODEL_FILE)
        assert (tags["olives.split"], tags["olives.seed"], tags["olives.kind"]) == ("0", "0", kind)
        tested = read_json(seed / kind / "eval/metrics.json")["macro"]["auroc"]
        assert float(tags["test_macro_auroc"]) == pytest.approx(tested)
    assert not client.search_model_versions("name='olives-biomarkers'")  # the champion's model


def test_teacher_track_on_a_new_store_records_what_dvc_restored(axis, tmp_path, monkeypatch):
    """A fresh store (DVC restored every stage, nothing was logged): the runs are recorded
    from the outputs, with their test metrics, and both models registered."""
    from mlflow import MlflowClient

    _, params, seed = axis
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the documented override of the store
    assert [r["version"] for r in teacher_track.run(params)] == ["1", "1"]
    client = MlflowClient(uri)
    for kind in ("ensemble", "student"):
        version = client.get_model_version_by_alias(f"olives-biomarkers-{kind}", "p0-s0")
        run = client.get_run(version.run_id)
        assert run.data.tags["model_sha256"] == file_sha256(seed / kind / "model" / MODEL_FILE)
        assert "test_macro_auroc" in run.data.metrics


@pytest.mark.parametrize("kind", ["ensemble", "student"])
def test_the_registered_model_answers_like_olives_predict(axis, registered, tmp_path, kind):
    """`models:/olives-biomarkers-<kind>@p0-s0`, loaded as MLflow serves it, gives the numbers
    `olives predict --model` gives for the same file, and names itself."""
    import base64

    import mlflow.pyfunc

    root, params, seed = axis
    images, _ = open_cache(root / data_params(params, 0).preprocess.cache_dir)
    scan = tmp_path / "scan.png"
    Image.fromarray(np.asarray(images[3])).save(scan)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/store/mlflow.db")
    try:
        model = mlflow.pyfunc.load_model(f"models:/olives-biomarkers-{kind}@p0-s0")
        request = pd.DataFrame({"image": [base64.b64encode(scan.read_bytes()).decode()]})
        served = model.predict(request)
    finally:
        mp.undo()
    out = tmp_path / "local.csv"
    local_model = str(seed / kind / "model")
    assert main(["predict", str(scan), "--model", local_model, "--out", str(out)]) == 0
    local = pd.read_csv(out)
    for name in LABELS:
        assert served[f"{name}_prob"].item() == pytest.approx(
            local[f"{name}_prob"].item(), abs=1e-6
        )
        assert served[f"{name}_pred"].item() == local[f"{name}_pred"].item()
    assert served["model_version"].item() == f"olives-biomarkers-{kind}/1"
    assert served["model_sha256"].item() == local["model_sha256"].item()


def test_rate_matched_thresholds_call_as_many_positives_as_the_members_do():
    rng = np.random.default_rng(0)
    sharp = rng.beta(0.3, 0.3, size=(5, 400, 3))  # members sure of themselves ...
    flat = sharp.mean(axis=0)  # ... average to flatter probabilities
    tuned = np.array([0.5, 0.2, 0.9])
    matched = ensemble.rate_matched(sharp, tuned)
    for j, threshold in enumerate(tuned):
        members_call = (sharp[:, :, j] >= threshold).sum() / 5
        assert (flat[:, j] >= matched[j]).sum() == round(members_call)
    assert not np.allclose(matched, tuned)
    none = ensemble.rate_matched(np.full((2, 4, 1), 0.3), np.array([0.5]))
    every = ensemble.rate_matched(np.full((2, 4, 1), 0.3), np.array([0.1]))
    assert none[0] > 0.3 and every[0] <= 0.3  # nobody / everybody positive, as the members


def test_a_stage_rerun_that_reproduces_the_file_adds_no_version(axis, registered):
    """DVC re-running `student` byte for byte leaves a second run of the same file: the
    registered version of the first still stands for it."""
    from mlflow import MlflowClient

    from olives.tracking.runs import Tracker

    root, params, seed = axis
    cell = student.cell_params(params, 0, 0, "student")
    sha = file_sha256(seed / "student/model" / MODEL_FILE)
    with Tracker(cell.tracking).run(run_name="rerun", tags={"model_sha256": sha}):
        pass
    assert teacher_track.run(params) == registered
    client = MlflowClient(f"sqlite:///{root}/store/mlflow.db")
    assert len(client.search_model_versions("name='olives-biomarkers-student'")) == 1
