"""k-fold teachers within a split's training patients: each fold's model predicts its held-out
fold, so the out-of-fold (OOF) files give every labelled training scan one calibrated
probability from a model that never trained on it; the split's validation patients are never
seen by a teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from olives.config import ConfigError, Params, from_dict
from olives.stages.paper import fold
from olives.stages.paper.data import data_params

LABELS = ("B1", "B2", "B3", "B4", "B5", "B6")


def test_teacher_folders_seeds_and_tracking():
    params = Params()
    teacher = fold.fold_params(params, 1, 2, 0)
    root = Path(params.paper.out_dir) / "teacher/p1-s2/folds/f0"
    assert Path(teacher.train.model_dir) == root / "model"  # a DVC output, not scratch
    assert Path(teacher.split.out_dir) == root / "split"
    assert Path(teacher.train.report_dir) == root / "train"
    assert teacher.seed == 2 and teacher.model.fusion == params.paper.teacher.fusion
    assert teacher.train.epochs == params.paper.teacher.epochs
    assert teacher.preprocess.cache_dir == data_params(params, 1).preprocess.cache_dir
    assert teacher.tracking.experiment == "olives-biomarkers-paper"
    assert teacher.tracking.registered_model is None
    assert teacher.train.checkpoint_dir != fold.fold_params(params, 1, 1, 0).train.checkpoint_dir
    assert teacher.train.checkpoint_dir != fold.fold_params(params, 0, 2, 0).train.checkpoint_dir


def split_index(patients: int = 12) -> pd.DataFrame:
    """A split index: 4 scans per patient, patients 0-1 validation, 2-3 test, the rest train,
    one unlabelled scan per patient."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(patients):
        part = "val" if p < 2 else "test" if p < 4 else "train"
        for r in range(5):
            labelled = r < 4
            row = {"Patient_ID": p, "sha1": f"{p}-{r}", "labelled": labelled}
            row["split"] = part if labelled else "unlabeled"
            row |= {f"B{k}": int(rng.random() < 0.4) for k in range(1, 7)}
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k", [2, 3])
def test_teacher_folds_cut_the_training_patients_only(k):
    params = from_dict(Params, {"paper": {"teacher": {"folds": list(range(k))}}})
    index = split_index()
    seen = []
    for f in range(k):
        cut = fold.teacher_index(index, params, split=0, fold=f)
        validation = cut["Patient_ID"].isin([0, 1])
        assert (cut.loc[validation, "split"] == fold.VALIDATION).all()  # never taught
        assert (cut.loc[index["split"] == "test", "split"] == "test").all()
        held = cut[cut["split"] == "val"]
        assert set(held["Patient_ID"]) <= set(range(4, 12)) and len(held)
        seen.append(set(held["Patient_ID"]))
        by_patient = cut[cut["labelled"]].groupby("Patient_ID")["split"].nunique()
        assert (by_patient == 1).all()  # a patient's scans stay in one part
    assert set().union(*seen) == set(range(4, 12))  # every training patient held out once
    assert sum(len(s) for s in seen) == 8
    again = fold.teacher_index(index, params, split=0, fold=0)
    assert again["split"].tolist() == fold.teacher_index(index, params, 0, 0)["split"].tolist()


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
        fold.fold_params(params, 0, 0, fold_)


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
        fold.fold_params(params, 0, 0, 0)
