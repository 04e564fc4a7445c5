"""k-fold teachers on the init axis's data: each fold's model predicts its held-out fold, so
the out-of-fold (OOF) files give every labelled non-test scan one calibrated probability from a
model that never trained on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from olives.config import ConfigError, Params, from_dict
from olives.stages.paper import fold
from olives.stages.paper.init_data import data_params

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


def test_teachers_refuse_the_main_pipelines_encoder():
    params = dataclasses.replace(
        Params(), model=dataclasses.replace(Params().model, pretrained="pretrain")
    )
    with pytest.raises(ConfigError, match=r"model\.pretrained = 'pretrain'"):
        fold.fold_params(params, 0, 0)
