"""`olives score` core: VIP Cup CSVs matched by path, scored on the intersection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from olives.evaluation.scoring import ScoreError, normalise_path, score_files

HEADER = "Path (Trial/Image Type/Subject/Visit/Eye/Image Name),B1,B2,B3,B4,B5,B6"
LABEL_ROWS = [
    "RECOVERY/OCT/01-001/W0/OS/a.tif,1,0,1,0,0,1",
    "RECOVERY/OCT/01-001/W0/OS/b.tif,1,1,0,0,0,0",
    "RECOVERY/OCT/01-002/W0/OD/c.tif,0,0,0,0,0,0",
    "RECOVERY/OCT/01-002/W0/OD/d.tif,1,0,0,1,0,0",
    "RECOVERY/OCT/01-003/W0/OD/e.tif,0,0,1,0,0,0",
]
SUBMISSION_ROWS = [  # shuffled, a leading '/', floats as in the organisers' baseline file
    "/RECOVERY/OCT/01-002/W0/OD/c.tif,0.0,0.0,0.0,0.0,0.0,0.0",
    "RECOVERY/OCT/01-001/W0/OS/a.tif,1.0,0.0,1.0,0.0,0.0,0.0",
    "RECOVERY/OCT/01-001/W0/OS/b.tif,1,0,0,0,0,0",
    "RECOVERY/OCT/01-002/W0/OD/d.tif, 0,0,0,1,1,0",
    "RECOVERY/OCT/09-999/W0/OD/z.tif,1,1,1,1,1,1",
]
REAL_LABELS = Path("olives-reference/labels/Training_Biomarker_Data.csv")


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_csv(tmp_path / "submission.csv", SUBMISSION_ROWS),
        write_csv(tmp_path / "labels.csv", LABEL_ROWS),
    )


def test_tiny_example_hand_computed_with_mismatches(tiny: tuple[Path, Path]) -> None:
    result = score_files(*tiny)
    # matched a, b, c, d. B1 tp=2 fn=1 -> 4/5; B2 tp=0 fn=1 -> 0; B3, B4 perfect;
    # B5 one false positive -> 0; B6 one miss -> 0.
    expected = {"B1": 0.8, "B2": 0.0, "B3": 1.0, "B4": 1.0, "B5": 0.0, "B6": 0.0}
    assert result.per_label_f1 == pytest.approx(expected)
    assert result.vip_phase1 == pytest.approx(2.8 / 6)
    assert result.n_matched == 4
    assert result.only_in_submission == ["RECOVERY/OCT/09-999/W0/OD/z.tif"]
    assert result.only_in_labels == ["RECOVERY/OCT/01-003/W0/OD/e.tif"]
    assert result.vip_phase2 is None
    text = result.format()
    assert "only in submission: 1" in text and "09-999/W0/OD/z.tif" in text
    assert "only in labels: 1" in text and f"{2.8 / 6:.4f}" in text
    assert "IR HRF" in text and "0.8000" in text


def test_tiny_example_phase2_by_patient_from_path(tiny: tuple[Path, Path]) -> None:
    result = score_files(*tiny, patient_part=2)
    # per image: mean F1 of classes "present" and "absent" over its six biomarkers
    a = (4 / 5 + 6 / 7) / 2  # present tp=2 fn=1; absent tp=3 fp=1
    b = (2 / 3 + 8 / 9) / 2  # present tp=1 fn=1; absent tp=4 fp=1
    c = 1.0  # nothing present, nothing predicted
    d = (2 / 4 + 6 / 8) / 2  # present tp=1 fp=1 fn=1; absent tp=3 fp=1 fn=1
    assert result.vip_phase2 == pytest.approx(((a + b) / 2 + (c + d) / 2) / 2)
    assert result.n_patients == 2
    assert "phase 2" in result.format()


def test_label_without_positive_or_prediction_is_none_but_zero_in_phase1(tmp_path: Path) -> None:
    rows = ["x1.tif,1,0,1,0,0,1", "x2.tif,0,1,1,0,0,0"]
    sub = write_csv(tmp_path / "s.csv", rows)
    result = score_files(sub, write_csv(tmp_path / "l.csv", rows))
    assert result.per_label_f1["B4"] is None and result.per_label_f1["B1"] == 1.0
    assert result.vip_phase1 == pytest.approx(4 / 6)  # the organisers' zero_division=0
    assert "n/a" in result.format()
    assert result.to_dict()["per_label_f1"]["B4"] is None


def test_real_label_file_against_itself_scores_one(shared_dir: Path) -> None:
    labels = shared_dir / REAL_LABELS
    result = score_files(labels, labels)
    assert result.n_matched == 9408
    assert result.vip_phase1 == 1.0
    assert all(v == 1.0 for v in result.per_label_f1.values())
    assert not result.only_in_submission and not result.only_in_labels


def test_real_label_file_with_flipped_column_gives_sklearn_value(
    shared_dir: Path, tmp_path: Path
) -> None:
    labels = shared_dir / REAL_LABELS
    truth = pd.read_csv(labels)
    flipped = truth.copy()
    rows = np.arange(0, len(flipped), 5)
    flipped.loc[rows, "B3"] = 1 - flipped.loc[rows, "B3"]
    flipped = flipped.drop(index=[1, 2, 3]).sample(frac=1.0, random_state=0)  # drop and shuffle
    submission = tmp_path / "flipped.csv"
    flipped.to_csv(submission, index=False)
    result = score_files(submission, labels)
    kept = truth.drop(index=[1, 2, 3]).set_index(truth.columns[0])
    pred = flipped.set_index(flipped.columns[0]).loc[kept.index]
    names = ["B1", "B2", "B3", "B4", "B5", "B6"]
    expected = f1_score(kept[names].to_numpy(), pred[names].to_numpy(), average="macro")
    assert result.vip_phase1 == pytest.approx(expected, abs=1e-12)
    assert result.vip_phase1 < 1.0
    assert result.per_label_f1["B3"] == pytest.approx(f1_score(kept["B3"], pred["B3"]))
    assert result.per_label_f1["B1"] == 1.0
    assert result.n_matched == 9405 and len(result.only_in_labels) == 3


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_missing_label_column_names_file_and_column(tmp_path: Path, tiny) -> None:
    bad = write_csv(tmp_path / "bad.csv", ["a.tif,1,0,1,0,0"], header="Path,B1,B2,B3,B4,B6")
    with pytest.raises(ScoreError, match=r"bad\.csv: missing label column\(s\) 'B5'"):
        score_files(bad, tiny[1])


@pytest.mark.parametrize(("value", "shown"), [("0.5", "'0.5'"), ("yes", "'yes'"), ("", "empty")])
def test_non_binary_value_names_line_path_and_column(
    tmp_path: Path, tiny, value: str, shown: str
) -> None:
    rows = ["a.tif,1,0,1,0,0,1", f"b.tif,1,0,{value},0,0,1"]
    bad = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ScoreError, match=rf"bad\.csv: line 3 \('b\.tif'\), column 'B3': .*{shown}"):
        score_files(tiny[0], bad)


def test_duplicate_paths_are_reported_with_lines(tmp_path: Path, tiny) -> None:
    rows = ["a.tif,1,0,1,0,0,1", "b.tif,1,0,1,0,0,1", "/a.tif,1,0,1,0,0,1"]
    bad = write_csv(tmp_path / "dup.csv", rows)
    with pytest.raises(ScoreError, match=r"dup\.csv: duplicate path 'a\.tif' on lines 2, 4"):
        score_files(bad, tiny[1])


def test_other_unscorable_inputs(tmp_path: Path, tiny) -> None:
    with pytest.raises(ScoreError, match=r"nope\.csv: file not found"):
        score_files(tmp_path / "nope.csv", tiny[1])
    other = write_csv(tmp_path / "other.csv", ["elsewhere.tif,1,0,1,0,0,1"])
    with pytest.raises(ScoreError, match="no image path in common"):
        score_files(other, tiny[1])
    no_path = write_csv(tmp_path / "nopath.csv", ["1,0,1,0,0,1"], header="B1,B2,B3,B4,B5,B6")
    with pytest.raises(ScoreError, match="first column must hold the image path"):
        score_files(no_path, tiny[1])
    empty = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(ScoreError, match=r"empty\.csv: no data rows"):
        score_files(empty, tiny[1])


def test_normalise_path() -> None:
    assert normalise_path(" /TREX DME\\GILA/x.tif ") == "TREX DME/GILA/x.tif"
