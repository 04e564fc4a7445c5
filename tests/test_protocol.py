"""The comparison protocols (`paper/protocol/*.yaml`): the committed files load, and every bad
file is refused with one line naming the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from olives.config import ConfigError
from olives.reporting.protocol import Protocol, header_lines, load_protocol, post_hoc_lines

PROTOCOLS = REPO / "paper" / "protocol"
TEACHER_METHODS = {
    "single",
    "single (same steps)",
    "self-training",
    "shuffled pseudo-labels",
    "linear probe",
    "ensemble",
    "student",
    "student + TTA",
}


@pytest.mark.parametrize(
    ("axis", "columns", "count"),
    [
        ("ablation", ("fusion", "loss"), 5),
        ("init", ("init", "mode"), 3),
        ("teacher", ("method",), 7),
    ],
)
def test_the_committed_protocols_load(axis: str, columns: tuple[str, ...], count: int):
    protocol = load_protocol(PROTOCOLS / f"{axis}.yaml")
    assert protocol.axis == axis and protocol.method == columns
    assert len(protocol.comparisons) == count
    assert protocol.metrics == ("macro_auroc", "macro_average_precision", "macro_f1")
    assert protocol.pair_on == ("split", "seed") and protocol.ci == 0.95
    assert protocol.written == "2026-12-06" and protocol.correction == "holm"


AXES = ("ablation", "init", "teacher")


def test_the_teacher_protocol_names_its_controls_and_post_hoc_changes():
    protocol = load_protocol(PROTOCOLS / "teacher.yaml")
    named = {n for c in protocol.comparisons for n in (c.method, c.reference)}
    assert named == TEACHER_METHODS
    assert ("student", "single (same steps)") in {
        (c.method, c.reference) for c in protocol.comparisons
    }
    assert len(protocol.post_hoc) == 4 and "0.386" in protocol.post_hoc[0].seen
    for axis in AXES:  # the split-level interval, then the runs re-made for issue 29
        *_, unit, remade = load_protocol(PROTOCOLS / f"{axis}.yaml").post_hoc
        assert "unit - split" in unit.change
        assert "re-made" in remade.change and "clinical_dropout" in remade.change
    lines = post_hoc_lines(protocol)
    assert "Post hoc" in lines[0] and any("rate-matched" in line for line in lines)


def test_the_header_gives_the_rule_the_grid_and_the_date():
    protocol = load_protocol(PROTOCOLS / "ablation.yaml")
    text = "\n".join(header_lines(protocol, splits=[0, 1, 2], seeds=[0, 1]))
    for expected in (
        protocol.question,
        "`concat/focal` vs `image/focal`: do BCVA and CST add to the image?",
        "primary `macro_auroc`",
        "`macro_f1`",
        "patient split seeds 0, 1, 2",
        "training seeds 0, 1",
        "95 % t-interval over the patient splits, each patient split's pairs averaged first",
        "Holm over the table's 5 comparisons (those that ran), per metric",
        "Holm-adjusted p < 0.05",
        '"no clear difference"',
        protocol.budget,
        "written 2026-12-06",
    ):
        assert expected in text, expected
    assert post_hoc_lines(protocol)[0].startswith("**Post hoc**")
    none = dataclasses.replace(protocol, post_hoc=())
    assert post_hoc_lines(none)[0].startswith("**Post hoc**: none")


def good() -> dict:
    return yaml.safe_load((PROTOCOLS / "init.yaml").read_text())


def refused(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "init.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        load_protocol(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_an_unknown_key_is_named(tmp_path: Path):
    raw = good()
    raw["comparisons"][1]["note"] = "x"
    assert "'comparisons[1].note'" in refused(tmp_path, raw)
    raw = good()
    raw["primay"] = "macro_auroc"
    message = refused(tmp_path, raw)
    assert "'primay'" in message and "did you mean 'primary'" in message


def test_a_missing_key_is_named(tmp_path: Path):
    raw = good()
    del raw["comparisons"][2]["reference"]
    assert "missing required parameter 'comparisons[2].reference'" in refused(tmp_path, raw)
    raw = good()
    del raw["written"]
    assert "'written'" in refused(tmp_path, raw)


def test_a_method_against_itself_or_twice_is_refused(tmp_path: Path):
    raw = good()
    raw["comparisons"][0]["reference"] = raw["comparisons"][0]["method"]
    assert "'comparisons[0].reference'" in refused(tmp_path, raw)
    raw = good()
    raw["comparisons"].append(dict(raw["comparisons"][1]))
    assert "'comparisons[3]'" in refused(tmp_path, raw)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("method", "init", "'method'"),
        ("ci", "high", "'ci'"),
        ("ci", 95, "'ci'"),
        ("secondary", [1], "'secondary[0]'"),
        ("correction", "bonferroni", "'correction'"),
        ("written", "6 December", "'written'"),
        ("comparisons", [{"method": "x", "reference": "y", "why": 3}], "'comparisons[0].why'"),
    ],
)
def test_a_bad_type_or_value_is_named(tmp_path: Path, key: str, value: object, named: str):
    raw = good()
    raw[key] = value
    assert named in refused(tmp_path, raw)


def test_a_comparison_must_name_every_method_column(tmp_path: Path):
    raw = good()
    raw["comparisons"][2]["method"] = "imagenet"
    assert "'comparisons[2].method'" in refused(tmp_path, raw)


def test_an_unquoted_date_and_a_missing_file(tmp_path: Path):
    path = tmp_path / "init.yaml"
    path.write_text((PROTOCOLS / "init.yaml").read_text().replace('"2026-12-06"', "2026-12-06"))
    assert load_protocol(path).written == "2026-12-06"
    with pytest.raises(ConfigError, match="protocol file not found"):
        load_protocol(tmp_path / "none.yaml")
    assert isinstance(load_protocol(path), Protocol)
