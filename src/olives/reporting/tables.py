"""Small, dependency-free Markdown and LaTeX (booktabs) table writers for the report.

Cells are formatted to strings first (`fmt`, `fmt_ci`), so the Markdown table, the LaTeX table
and the report text show exactly the same digits. Written here rather than through
`DataFrame.to_markdown` / `to_latex` because those depend on `tabulate` / `jinja2`, which the
project does not declare, and because a paper table needs exact control of escaping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

MISSING = "n/a"
EXTRA_DIGITS = 3  # at most this many digits beyond `digits` to tell a point from its bounds
OUTSIDE = "†"  # marks a point estimate outside its own bootstrap interval
# LaTeX special characters outside math mode and their escaped forms.
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A number with fixed digits; None/NaN (an undefined metric) becomes 'n/a'."""
    if value is None:
        return MISSING
    value = float(value)
    if value != value:  # NaN
        return MISSING
    return f"{value:.{digits}f}"


def fmt_ci(value: Any, ci: Sequence[float] | None, digits: int = 3) -> str:
    """`0.912 [0.881, 0.940]`; the interval is left out when it is undefined.

    Point and bounds share their digits, so rounding keeps their order: a printed point lies
    inside its printed interval exactly when it lies inside the interval. Digits are added (up
    to `EXTRA_DIGITS`) while a point that differs from a bound would print equal to it
    (`0.9998 [0.9986, 1.0000]`, not `1.000 [0.999, 1.000]`). A point outside its percentile
    interval (a skewed bootstrap distribution) is printed as it is and marked `OUTSIDE`.
    """
    text = fmt(value, digits)
    if text == MISSING or not ci or any(b is None for b in ci):
        return text
    point, low, high = float(value), float(ci[0]), float(ci[1])
    places = digits
    while places < digits + EXTRA_DIGITS and _collides(point, (low, high), places):
        places += 1
    mark = "" if low <= point <= high else OUTSIDE
    return f"{point:.{places}f}{mark} [{low:.{places}f}, {high:.{places}f}]"


def _collides(point: float, bounds: tuple[float, float], places: int) -> bool:
    """Whether `point` prints equal to a bound it differs from."""
    shown = f"{point:.{places}f}"
    return any(b != point and f"{b:.{places}f}" == shown for b in bounds)


def fmt_percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage: 0.254 -> '25.4 %'."""
    return MISSING if value is None or value != value else f"{100 * float(value):.{digits}f} %"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of the frame's cells (as strings), no index."""
    header = [str(c) for c in frame.columns]
    lines = [
        "| " + " | ".join(_md_cell(c) for c in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", r"\|").replace("\n", " ")


def latex_escape(text: Any) -> str:
    """Escape LaTeX special characters (underscore, percent, ampersand ...)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(
    frame: pd.DataFrame,
    caption: str,
    label: str,
    align: str | None = None,
    rule_before: Sequence[int] = (),
) -> str:
    """A booktabs `table` ready for `\\input` (needs `\\usepackage{booktabs}`).

    `align` defaults to a left first column and right-aligned others; `rule_before` lists the
    body rows that get a `\\midrule` above them (e.g. the averages under the per-label rows).
    """
    n = len(frame.columns)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n:
        raise ValueError(f"align {align!r} has {len(align)} columns, the table has {n}")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(frame.itertuples(index=False)):
        if i in rule_before:
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
