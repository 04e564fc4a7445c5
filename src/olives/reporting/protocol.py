"""A table's comparison protocol, written before its results and printed atop the table.

One YAML file per axis (`paper/protocol/<axis>.yaml`) names what a table compares (each
method against a named reference, and why), on which metrics, paired on which columns, at
which interval level, with which correction, on what budget, and when it was written. A
change made after a result had been seen is listed under `post_hoc` with its reason and what
had been seen, so a reader can tell a planned comparison from a revised one.

Loading is as strict as `params.yaml`'s (`olives.config.from_dict`): an unknown key, a missing
key or a wrong type raises `ConfigError` with one line naming the file and the key.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from olives.config import ConfigError, from_dict

# How the header names the usual pairing columns.
PAIR_NAMES = {"split": "patient split", "seed": "training seed"}


@dataclass(frozen=True)
class Comparison:
    """`method` against `reference` (method - reference), and the question it answers."""

    method: str
    reference: str
    why: str


@dataclass(frozen=True)
class PostHoc:
    """A change made after a result had been seen: what, why, and which result."""

    change: str
    reason: str
    seen: str


@dataclass(frozen=True)
class Protocol:
    """One axis's comparisons, metrics, pairing, interval, correction and budget."""

    axis: str
    question: str
    method: tuple[str, ...]  # runs-table columns whose values, joined by "/", name a method
    comparisons: tuple[Comparison, ...]
    primary: str  # a runs-table metric column
    budget: str
    written: str  # ISO date
    secondary: tuple[str, ...] = ()
    pair_on: tuple[str, ...] = ("split", "seed")
    unit: str | None = "split"  # the independent replicate: its pairs are averaged first
    ci: float = 0.95
    correction: Literal["holm"] = "holm"
    post_hoc: tuple[PostHoc, ...] = ()

    def __post_init__(self) -> None:
        for key in ("axis", "question", "primary", "budget"):
            if not getattr(self, key).strip():
                raise ConfigError(f"'{key}': empty")
        for key in ("method", "comparisons", "pair_on"):
            if not getattr(self, key):
                raise ConfigError(f"'{key}': empty")
        if not 0 < self.ci < 1:
            raise ConfigError(f"'ci' = {self.ci} must be in (0, 1)")
        if self.unit is not None and self.unit not in self.pair_on:
            raise ConfigError(
                f"'unit' = {self.unit!r} is not one of 'pair_on' {list(self.pair_on)}"
            )
        try:
            datetime.date.fromisoformat(self.written)
        except ValueError:
            raise ConfigError(f"'written' = {self.written!r} is not an ISO date") from None
        metrics = (self.primary, *self.secondary)
        for i, metric in enumerate(self.secondary):
            if metric in metrics[: i + 1]:
                raise ConfigError(f"'secondary[{i}]' = {metric!r} is listed twice")
        self._check_comparisons()

    def _check_comparisons(self) -> None:
        seen: set[tuple[str, str]] = set()
        for i, c in enumerate(self.comparisons):
            key = f"comparisons[{i}]"
            if c.method == c.reference:
                raise ConfigError(f"'{key}.reference' = {c.reference!r} is its own method")
            if (c.method, c.reference) in seen:
                raise ConfigError(f"'{key}': {c.method!r} vs {c.reference!r} is listed twice")
            seen.add((c.method, c.reference))
            for part in ("method", "reference"):
                name = getattr(c, part)
                if len(self.method) > 1 and len(name.split("/")) != len(self.method):
                    raise ConfigError(
                        f"'{key}.{part}' = {name!r} does not name "
                        f"{'/'.join(self.method)} (values joined by '/')"
                    )

    @property
    def metrics(self) -> tuple[str, ...]:
        """The primary metric, then the secondary ones."""
        return (self.primary, *self.secondary)


def load_protocol(path: Path) -> Protocol:
    """Read one protocol file; every key is checked, errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: protocol file not found") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {problem}") from None
    try:
        return from_dict(Protocol, _dates_as_text(raw), prefix="")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _dates_as_text(raw: Any) -> Any:
    """YAML reads an unquoted `2026-12-06` as a date: keep it as the text that was written."""
    if isinstance(raw, dict) and isinstance(raw.get("written"), datetime.date):
        return {**raw, "written": raw["written"].isoformat()}
    return raw


def header_lines(protocol: Protocol, splits: Sequence[int], seeds: Sequence[int]) -> list[str]:
    """Markdown lines printed at the top of a table: the protocol as it was written."""
    p = protocol
    level = f"{100 * p.ci:g} %"
    alpha = f"{1 - p.ci:.2g}"
    lines = [
        f"**Protocol** ({p.axis}; written {p.written}, before the results; "
        f"`paper/protocol/{p.axis}.yaml`)",
        "",
        f"- Question: {p.question}",
        f"- Methods: named by the runs' {'/'.join(f'`{c}`' for c in p.method)} "
        f"column{'s' if len(p.method) > 1 else ''}. Comparisons (method vs reference):",
        *(
            f"  {i}. `{c.method}` vs `{c.reference}`: {c.why}"
            for i, c in enumerate(p.comparisons, 1)
        ),
        f"- Metrics: primary `{p.primary}`; secondary "
        + (", ".join(f"`{m}`" for m in p.secondary) if p.secondary else "none")
        + " (test split).",
        f"- Pairing: {_pairing(p.pair_on, splits, seeds)}",
        f"- Interval: the mean paired difference (method - reference) with its {level} "
        + _over(p.unit)
        + ", unadjusted.",
        f"- Correction: Holm over the table's {len(p.comparisons)} comparisons (those that "
        "ran), per metric.",
        f'- Verdict: "helped" / "hurt" only where the Holm-adjusted p < {alpha}, else '
        '"no clear difference"; "not run" where the method or its reference has no run.',
        f"- Budget: {p.budget}",
        "",
    ]
    return lines


def _over(unit: str | None) -> str:
    if unit is None:
        return "t-interval over the pairs"
    name = PAIR_NAMES.get(unit, f"`{unit}`")
    return (
        f"t-interval over the {name}s, each {name}'s pairs averaged first (the pairs of one "
        f"{name} share its patients, so they are not independent replicates)"
    )


def _pairing(pair_on: Sequence[str], splits: Sequence[int], seeds: Sequence[int]) -> str:
    names = " and ".join(PAIR_NAMES.get(c, f"`{c}`") for c in pair_on)
    grid = []
    if "split" in pair_on:
        grid.append(f"patient split seeds {_listed(splits)}")
    if "seed" in pair_on:
        grid.append(f"training seeds {_listed(seeds)}")
    where = f" ({'; '.join(grid)})" if grid else ""
    return f"runs paired by {names}{where}: a pair shares its test patients and its seed."


def _listed(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values) if len(values) else "none"


def post_hoc_lines(protocol: Protocol) -> list[str]:
    """The table's post-hoc changes (made after a result had been seen), or a line saying
    there were none."""
    if not protocol.post_hoc:
        return ["**Post hoc**: none; every comparison above was planned before its results.", ""]
    lines = ["**Post hoc** (changed after a result had been seen):", ""]
    for i, entry in enumerate(protocol.post_hoc, 1):
        lines.append(f"{i}. {entry.change}; why: {entry.reason}; seen: {entry.seen}.")
    return [*lines, ""]
