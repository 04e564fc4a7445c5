"""k-fold teachers on the init axis's data: each fold's model predicts its held-out fold, so
the out-of-fold (OOF) files give every labelled non-test scan one calibrated probability from a
model that never trained on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from olives.config import ConfigError, Params, from_dict
from olives.data.cache import open_cache
from olives.data.prepare import clinical_features, read_index
from olives.models.bundle import FILE as MODEL_FILE
from olives.models.bundle import ModelBundle
from olives.stages import fold, init_data
from olives.stages.init_data import data_params

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def tiny_params(root: Path) -> Params:
    return from_dict(
        Params,
        {
            "data": {"synthetic": {"width": 64, "height": 64}},
            "train": {"batch_size": 16, "progress": False, "num_threads": 1},
            "tracking": {"tracking_uri": f"sqlite:///{root}/store/mlflow.db"},
            "paper": {
                "init": {"preset": "tiny", "unlabeled_fraction": 1.0, "size": 32},
                "teacher": {"folds": [1, 0], "epochs": 1},
            },
        },
    )


def test_teacher_folders_seeds_and_tracking():
    params = Params()
    teacher = fold.fold_params(params, 2, 3)
    root = Path(params.paper.out_dir) / "teacher/s2/folds/f3"
    assert Path(teacher.train.model_dir) == root / "model"  # a DVC output, not scratch
    assert Path(teacher.split.out_dir) == root / "split"
    assert Path(teacher.train.report_dir) == root / "train"
    assert (teacher.split.n_folds, teacher.split.fold) == (5, 3)
    assert teacher.seed == 2 and teacher.model.fusion == params.paper.teacher.fusion
    assert teacher.train.epochs == params.paper.teacher.epochs
    assert teacher.preprocess.cache_dir == data_params(params).preprocess.cache_dir
    assert teacher.tracking.experiment == "olives-biomarkers-paper"
    assert teacher.tracking.registered_model is None
    # the fold split is cut with the pipeline's seed, whatever the training seed
    assert fold.split_params(params, 2, 3).seed == params.seed
    assert teacher.train.checkpoint_dir != fold.fold_params(params, 1, 3).train.checkpoint_dir


@pytest.mark.parametrize(
    ("teacher", "fold_", "match"),
    [
        ({"folds": [0]}, 0, r"'paper\.teacher\.folds' = \[0\] must be 0\.\.k-1 with k >= 2"),
        ({"folds": [0, 2]}, 0, r"'paper\.teacher\.folds' = \[0, 2\]"),
        ({"folds": [0, 1]}, 2, r"fold 2 is not in 'paper\.teacher\.folds'"),
        ({"epochs": 0}, 0, r"'paper\.teacher\.epochs' = 0 must be >= 1"),
    ],
)
def test_invalid_teacher_grids_name_the_key(teacher, fold_, match):
    params = from_dict(Params, {"paper": {"teacher": teacher}})
    with pytest.raises(ConfigError, match=match):
        fold.fold_params(params, 0, fold_)


def test_unknown_teacher_key_and_wrong_fusion_name_the_key():
    with pytest.raises(ConfigError, match=r"paper\.teacher\.fold'"):
        from_dict(Params, {"paper": {"teacher": {"fold": [0, 1]}}})
    with pytest.raises(ConfigError, match=r"'paper\.teacher\.fusion' = 'late'"):
        from_dict(Params, {"paper": {"teacher": {"fusion": "late"}}})


def reference_probabilities(bundle: ModelBundle, cache_dir: str, rows: pd.DataFrame) -> np.ndarray:
    """sigmoid(logit / T), computed by hand from the cache pixels and clinical features."""
    images, _ = open_cache(Path(cache_dir))
    pixels = torch.from_numpy(np.asarray(images[rows["row"].to_numpy()])).unsqueeze(1) / 255.0
    clinical = torch.from_numpy(clinical_features(rows, bundle.clinical))
    with torch.no_grad():
        logits = bundle.model.eval()(pixels.float(), clinical).double()
    return torch.sigmoid(logits / torch.tensor(bundle.temperatures, dtype=torch.float64)).numpy()


def test_k_fold_teachers_cover_every_labelled_non_test_scan_once(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params(tmp_path)
    init_data.run(params)
    axis = read_index(tmp_path / data_params(params).split.out_dir)
    pool = axis[axis["labelled"] & (axis["split"] != "test")]
    assert pool["Patient_ID"].nunique() >= 4
    val_patients, oofs = [], []
    for k in (0, 1):
        summary = fold.run(params, 0, k)
        teacher = fold.fold_params(params, 0, k)
        folder = tmp_path / "reports/paper/teacher/s0/folds" / f"f{k}"
        assert (folder / "model" / MODEL_FILE).is_file() and summary["oof_rows"] > 0
        index = read_index(folder / "split")
        # same official test split as the axis's
        assert set(index.loc[index["split"] == "test", "image_id"]) == set(
            axis.loc[axis["split"] == "test", "image_id"]
        )
        val = index[index["split"] == "val"].reset_index(drop=True)
        val_patients.append(set(val["Patient_ID"]))
        oof = pd.read_csv(folder / "oof.csv")
        assert oof["image_id"].tolist() == val["image_id"].tolist()
        assert (oof["fold"] == k).all()
        assert (oof[list(LABELS)].to_numpy() == val[list(LABELS)].to_numpy()).all()
        probs = oof[[f"{n}_prob" for n in LABELS]].to_numpy()
        assert ((probs >= 0) & (probs <= 1)).all()
        bundle = ModelBundle.load(Path(teacher.train.model_dir), "cpu")
        assert any(t != 1.0 for t in bundle.temperatures)  # calibrated, not plain sigmoids
        reference = reference_probabilities(bundle, teacher.preprocess.cache_dir, val)
        np.testing.assert_allclose(probs, reference, atol=2e-6)
        oofs.append(oof)
    assert not val_patients[0] & val_patients[1]
    assert val_patients[0] | val_patients[1] == set(pool["Patient_ID"])
    both = pd.concat(oofs)
    assert both["image_id"].is_unique
    assert set(both["image_id"]) == set(pool["image_id"])
    # the two teachers are one MLflow group, told apart by fold, never registered
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    experiment = client.get_experiment_by_name("olives-biomarkers-paper")
    runs = client.search_runs([experiment.experiment_id], "tags.`olives.group` = 'teacher-s0'")
    assert sorted(r.data.tags["olives.fold"] for r in runs) == ["0", "1"]
    assert all("best_val_macro_auroc" in r.data.metrics for r in runs)
    assert not client.search_registered_models()


def test_teachers_refuse_the_main_pipelines_encoder():
    params = dataclasses.replace(
        Params(), model=dataclasses.replace(Params().model, pretrained="pretrain")
    )
    with pytest.raises(ConfigError, match=r"model\.pretrained = 'pretrain'"):
        fold.fold_params(params, 0, 0)
