"""The report's clinical numbers: confusion counts, rates with intervals, caveats, the
point-inside-interval formatting rule, ECE, volume-level aggregation and metrics, eye names."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix

from olives.data.volumes import (
    aggregate_volumes,
    eye_name,
    eye_side,
    natural_key,
    volume_ids,
    volume_table,
)
from olives.evaluation.calibration import expected_calibration_error
from olives.evaluation.intervals import evaluate_predictions
from olives.evaluation.volumes import volume_metrics
from olives.reporting.groups import group_scores
from olives.reporting.operating import (
    RATE_FLOOR,
    Bootstrap,
    below_floor,
    caveats,
    confusion_counts,
    fast_counts,
    operating_point,
)
from olives.reporting.report import worst_cases
from olives.reporting.results import floor_lines
from olives.reporting.tables import OUTSIDE, fmt_ci


def random_case(seed: int = 0, n: int = 120, patients: int = 9):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, size=n)
    d = np.where(rng.random(n) < 0.7, t, 1 - t)
    return t, d, rng.integers(0, patients, size=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_equal_scikit_learns_confusion_matrix(seed):
    t, d, _ = random_case(seed)
    tn, fp, fn, tp = confusion_matrix(t, d).ravel()
    expected = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert confusion_counts(t, d) == expected
    assert fast_counts(t, d) == expected


def test_rates_and_their_intervals_match_the_evaluate_stage():
    t, d, patients = random_case(3)
    point = operating_point(t, d, patients, Bootstrap(200, 0.95, 7))
    c = confusion_counts(t, d)
    assert point["ppv"] == pytest.approx(c["tp"] / (c["tp"] + c["fp"]))
    assert point["npv"] == pytest.approx(c["tn"] / (c["tn"] + c["fn"]))
    # Same draws as metrics.json: with decisions as probabilities and threshold 0.5 the
    # evaluate stage's sensitivity / specificity intervals are the same numbers.
    metrics = evaluate_predictions(
        t[:, None], d[:, None].astype(float), np.array([0.5]), patients, ["B"], n_boot=200, seed=7
    )
    for rate in ("sensitivity", "specificity"):
        assert point[rate] == pytest.approx(metrics["per_label"]["B"][rate])
        assert point[f"{rate}_ci"] == pytest.approx(metrics["per_label"]["B"][f"{rate}_ci"])


def test_an_undefined_rate_has_no_interval():
    t = np.array([0, 0, 0, 0])
    point = operating_point(t, np.array([0, 0, 1, 0]), np.arange(4), Bootstrap(20, 0.95, 0))
    assert np.isnan(point["sensitivity"]) and point["sensitivity_ci"] is None
    assert point["specificity"] == 0.75 and point["specificity_ci"] is not None


def test_ece_on_a_hand_made_case():
    # Bin [0.1, 0.2): mean p 0.1, half positive -> gap 0.4; bin [0.9, 1.0]: mean 0.9, all
    # positive -> gap 0.1; each bin holds half the scans: ECE = 0.5 * 0.4 + 0.5 * 0.1.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


@pytest.mark.parametrize(
    ("value", "ci", "text"),
    [
        (0.9998305, [0.9985550, 1.0], "0.9998 [0.9986, 1.0000]"),  # the B5 AUROC case
        (0.91234, [0.8812, 0.9401], "0.912 [0.881, 0.940]"),
        (1.0, [1.0, 1.0], "1.000 [1.000, 1.000]"),
        (0.8, [0.0, 1.0], "0.800 [0.000, 1.000]"),
        (0.5, [0.5, 0.75], "0.500 [0.500, 0.750]"),  # a point on its bound stays on it
        (0.50001, [0.5, 0.75], "0.50001 [0.50000, 0.75000]"),
        (0.5000001, [0.5, 0.75], "0.500000 [0.500000, 0.750000]"),  # digits capped at 3 + 3
        (0.5, [0.6, 0.7], f"0.500{OUTSIDE} [0.600, 0.700]"),
        (None, [0.1, 0.2], "n/a"),
        (0.5, None, "0.500"),
    ],
)
def test_a_printed_point_lies_inside_its_printed_interval(value, ci, text):
    assert fmt_ci(value, ci) == text


def test_the_rule_holds_on_random_triples():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        low, point, high = np.sort(rng.choice([rng.random(), 1.0, 0.0, 0.9995], 3))
        printed = [float(x) for x in re.findall(r"\d+\.\d+", fmt_ci(point, [low, high]))]
        assert printed[1] <= printed[0] <= printed[2]


def frame_of(paths, patients, truth, probs, threshold=0.5):
    frame = pd.DataFrame(
        {"path": paths, "Patient_ID": patients, "eye": [1.0] * len(paths), "row": range(len(paths))}
    )
    frame["B1"] = truth
    frame["B1_prob"] = probs
    frame["B1_pred"] = (np.asarray(probs) >= threshold).astype(int)
    return frame


def test_volume_aggregation_on_a_hand_made_table():
    paths = ["T/1/V2/OD/a.tif", "T/1/V2/OD/b.tif", "T/1/V14/OD/a.tif", "T/2/W0/OS/a.png"]
    frame = frame_of(paths, [1, 1, 1, 2], [0, 1, 0, 0], [0.7, 0.2, 0.1, 0.4])
    ids = volume_ids(frame, "Patient_ID")
    volumes = aggregate_volumes(frame, ["B1"], "Patient_ID", ids).set_index("volume")
    v2, v14, w0 = volumes.loc["T/1/V2/OD"], volumes.loc["T/1/V14/OD"], volumes.loc["T/2/W0/OS"]
    # any scan positive -> positive; probability = max; called when any scan is called
    assert (v2["B1"], v2["B1_prob"], v2["B1_pred"], v2["scans"]) == (1, 0.7, 1, 2)
    assert (v14["B1"], v14["B1_prob"], v14["B1_pred"], v14["scans"]) == (0, 0.1, 0, 1)
    assert (w0["B1"], w0["B1_pred"]) == (0, 0)
    # visits ordered by number within each eye: V2 before V14
    assert (v2["visit"], v2["visit_order"], v14["visit_order"], w0["visit_order"]) == (
        "V2",
        1,
        2,
        1,
    )
    assert sorted(["V14", "V2", "W104", "W0"], key=natural_key) == ["V2", "V14", "W0", "W104"]


def test_sources_without_volume_ids_say_why():
    flat = frame_of(["a.png", "b.png"], [1, 2], [0, 1], [0.1, 0.9])
    assert volume_ids(flat, "Patient_ID")["volume"].tolist() == ["a.png", "b.png"]  # one each
    mixed = frame_of(["x/a.png", "x/b.png"], [1, 2], [0, 1], [0.1, 0.9])
    assert volume_ids(mixed, "Patient_ID") == "volume x holds scans of several patients"
    assert "no image paths" in volume_ids(flat.drop(columns="path"), "Patient_ID")


def test_group_scores_rank_the_worst_group_first():
    frame = frame_of(["a/1", "a/2", "b/1"], [1, 1, 2], [1, 0, 1], [0.9, 0.1, 0.2])
    table = group_scores(frame, ["B1"], "Patient_ID")
    assert table["group"].tolist() == [2, 1]
    assert table["count"].tolist() == [1, 2] and table["B1_accuracy"].tolist() == [0.0, 1.0]


def test_the_gallery_shows_at_most_one_scan_per_volume():
    paths = ["P/V1/OD/a", "P/V1/OD/b", "P/V1/OD/c", "Q/V1/OS/a"]
    frame = frame_of(paths, [1, 1, 1, 2], [0, 0, 0, 0], [0.9, 0.8, 0.7, 0.6])
    ids = volume_ids(frame, "Patient_ID")
    cases = worst_cases(frame, "B1", 3, ids["volume"])
    assert cases["fp"]["path"].tolist() == ["P/V1/OD/a", "Q/V1/OS/a"]
    assert len(worst_cases(frame, "B1", 3)["fp"]) == 3


def bootstrap_block(total: int, used: dict[str, int]) -> dict:
    return {"n_resamples": total, "n_used": used}


def test_the_few_patients_caveat_appears_when_it_should():
    # B1's 2 positives come from patient 1 only; B2's from 5 patients.
    patients = np.repeat(np.arange(1, 7), 2)
    frame = pd.DataFrame({"Patient_ID": patients})
    frame["B1"] = [1, 1] + [0] * 10
    frame["B2"] = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0]
    used = {"B1.auroc": 600, "B1.f1": 990, "B2.auroc": 1000}
    found = caveats(frame, ["B1", "B2"], "Patient_ID", bootstrap_block(1000, used), 5)
    assert found["B2"] == []
    assert found["B1"][0] == "its 2 positive scans come from 1 of 6 test patients (fewer than 5)"
    assert "(of 1000): 400 from AUROC; 10 from F1" in found["B1"][1]
    assert caveats(frame, ["B1"], "Patient_ID", bootstrap_block(1000, {}), 1) == {"B1": []}


def test_a_rate_below_the_floor_is_a_caution_with_its_counts():
    """The user's case: 375 of 415 negatives called positive; B2 decides well."""
    boot = Bootstrap(0, 0.95, 0)
    t = np.array([1] * 10 + [0] * 415)
    b1 = operating_point(t, np.array([1] * 10 + [0] * 40 + [1] * 375), np.arange(425), boot)
    b2 = operating_point(t, np.array([1] * 9 + [0] * 400 + [1] * 16), np.arange(425), boot)
    found = below_floor({"B1": b1, "B2": b2}, ["B1", "B2"])
    assert RATE_FLOOR == 0.5 and list(found) == ["B1"]
    assert found["B1"] == (
        "specificity at the tuned threshold is 0.096 (40 of 415 negative scans called "
        "negative; 375 false positives)"
    )
    (line,) = [ln for ln in floor_lines({"B1": b1, "B2": b2}, ("B1", "B2"), "scan") if ln]
    assert line.startswith("- **Caution, B1 (IR HRF):** specificity at the tuned threshold")
    assert line.endswith("the threshold tuned on validation does not transfer to this test set.")


def test_both_rates_below_the_floor_make_one_line_and_undefined_ones_none():
    boot = Bootstrap(0, 0.95, 0)
    both = operating_point(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]), np.arange(4), boot)
    no_positive = operating_point(np.zeros(3), np.zeros(3), np.arange(3), boot)
    found = below_floor({"B1": both, "B2": no_positive}, ["B1", "B2"], unit="volume")
    assert found == {
        "B1": "sensitivity at the tuned threshold is 0.000 (0 of 2 positive volumes called "
        "positive; 2 false negatives) and specificity at the tuned threshold is 0.000 (0 of 2 "
        "negative volumes called negative; 2 false positives)"
    }
    one = operating_point(np.array([0, 1]), np.array([1, 1]), np.arange(2), boot)
    assert (
        "(0 of 1 negative volume called negative; 1 false positive)"
        in below_floor({"B1": one}, ["B1"], unit="volume")["B1"]
    )


@pytest.mark.parametrize(
    ("eye", "path", "shown"),
    [
        (1009.0, "synthetic/P1009/OS/V1/vol0", "OS"),  # the synthetic layout
        (3.0, "/TREX DME/GILA/0201GOD/V1/OD/TREXJ_000000.tif", "OD"),  # OLIVES: not 0201GOD
        (12, "Prime_FULL/02-045/W84/os/38.tif", "OS"),
        ("od", "", "OD"),  # the data say which
        (1009.0, "P1009/V1/vol0/a.png", "1009"),  # nothing says which: the id
        (7, "x/OD/y/OS/a.png", "7"),  # both named: unknown
        ("L-7", "a.png", "L-7"),
    ],
)
def test_an_eye_is_shown_as_od_or_os_where_known(eye, path, shown):
    assert eye_name(eye, path) == shown


def test_eye_side_reads_whole_path_components_only():
    assert eye_side("T/1/V2/OD") == "OD"
    assert eye_side("T/1/V2/ODX/a.tif") is None and eye_side("OD.png") is None


def test_volume_metrics_are_evaluate_predictions_on_the_volume_table():
    paths = ["P1/V1/OD/a", "P1/V1/OD/b", "P1/V2/OD/a", "P2/V1/OS/a", "P2/V2/OS/a", "P3/V1/OD/a"]
    frame = frame_of(paths, [1, 1, 1, 2, 2, 3], [0, 1, 0, 1, 0, 1], [0.2, 0.6, 0.3, 0.4, 0.7, 0.9])
    volumes = volume_table(frame, ["B1"], "Patient_ID")
    block = volume_metrics(volumes, ["B1"], np.array([0.5]), "Patient_ID", 40, seed=3)
    expected = evaluate_predictions(
        np.array([[1], [0], [1], [0], [1]]),
        np.array([[0.6], [0.3], [0.4], [0.7], [0.9]]),
        np.array([0.5]),
        np.array([1, 1, 2, 2, 3]),
        ["B1"],
        40,
        seed=3,
    )
    assert (block["unit"], block["n_volumes"], block["n_scans"]) == ("volume", 5, 6)
    assert block["per_label"] == expected["per_label"]
    assert block["macro"] == expected["macro"] and block["micro"] == expected["micro"]
    assert "vip_phase1" not in block and "vip_phase1" not in block["bootstrap"]["n_used"]
    flat = frame_of(["a.png", "b.png"], [1, 1], [0, 1], [0.1, 0.9]).assign(path=None)
    assert volume_metrics(
        volume_table(flat, ["B1"], "Patient_ID"), ["B1"], np.array([0.5]), "Patient_ID"
    ) == {"unit": "volume", "unavailable": "its scans have no image paths"}
