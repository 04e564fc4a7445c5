"""The two shared edge rules: a path from a file stays inside its folder, a clinical value is
finite and plausible before it reaches the model."""

from __future__ import annotations

import math

import pytest

from olives.data.schema import CLINICAL_RANGES, clinical_problem
from olives.errors import InputError
from olives.io import inside


@pytest.mark.parametrize(
    "name",
    [
        "../secret.png",
        "a/../../secret.png",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "\\\\server\\share\\x.png",
        "",
        "   ",
        "link/escape.png",
    ],
)
def test_a_file_name_cannot_leave_its_folder(tmp_path, name):
    root = tmp_path / "root"
    (root / "link").parent.mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)  # a link inside that points outside
    with pytest.raises(InputError):
        inside(root, name)


def test_a_link_loop_is_an_input_error(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    with pytest.raises(InputError, match="loop"):
        inside(tmp_path, "loop.png")


@pytest.mark.parametrize("name", ["a.png", "sub/b.png", "sub/../c.png", "./d.png"])
def test_names_inside_the_folder_pass(tmp_path, name):
    assert inside(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BCVA", math.inf),
        ("BCVA", -math.inf),
        ("BCVA", math.nan),
        ("BCVA", 1e308),
        ("BCVA", -1.0),
        ("BCVA", 100.5),
        ("CST", 1e39),
        ("CST", -500.0),
        ("CST", 0.0),
        ("other", math.inf),
    ],
)
def test_implausible_clinical_values_are_named(name, value):
    problem = clinical_problem(name, value)
    assert problem is not None and name in problem


@pytest.mark.parametrize(
    ("name", "value"), [("BCVA", 0.0), ("BCVA", 100.0), ("CST", 151.0), ("other", -3.0)]
)
def test_plausible_or_missing_values_pass(name, value):
    assert clinical_problem(name, value) is None
    assert clinical_problem(name, None) is None


def test_the_real_olives_ranges_fit_inside_the_bounds():
    """OLIVES's own extremes (BCVA 27-100 letters, CST 151-723 µm) are accepted."""
    for name, (low, high) in {"BCVA": (27, 100), "CST": (151, 723)}.items():
        bounds = CLINICAL_RANGES[name]
        assert bounds[0] <= low and high <= bounds[1]
