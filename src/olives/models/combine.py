"""An ensemble of trained model files as one model file: `combine` builds the `ModelBundle`
whose model is an `EnsembleNet` (`olives.models.ensemble`) of the members.

Apart from `ensemble`, which holds the network alone, so that `bundle` (which loads an
ensemble's network from its metadata) and this module (which builds a bundle) import downwards
only: ensemble <- bundle <- combine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from olives.models.bundle import BundleError, ModelBundle
from olives.models.ensemble import EnsembleNet, Member


def combine(
    members: Sequence[ModelBundle],
    thresholds: Sequence[float],
    clinical_stats: dict[str, dict[str, float]],
    member_hashes: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
) -> ModelBundle:
    """One bundle averaging the members' calibrated probabilities (temperatures 1), decided
    at `thresholds` (tuned by the caller on the averaged probabilities) and taking clinical
    values standardised with `clinical_stats`. The members must agree on labels, clinical
    names, image size and resize policy. `params`: the params every member shares, the member
    count, their model hashes when given, then the caller's `params`. The members' modules
    are shared with the ensemble, not copied."""
    check_members(members)
    first = members[0]
    missing = [n for n in first.clinical if n not in clinical_stats]
    if missing:
        raise BundleError(f"clinical_stats has no statistics for {missing}")
    if member_hashes is not None and len(member_hashes) != len(members):
        raise BundleError(f"{len(member_hashes)} member hashes for {len(members)} members")
    net = EnsembleNet(
        [Member(m.model, tuple(m.temperatures or ()), m.clinical_stats) for m in members],
        first.clinical,
        clinical_stats,
    )
    shared = {
        k: v for k, v in first.params.items() if all(m.params.get(k) == v for m in members[1:])
    }
    shared["ensemble.members"] = len(members)
    if member_hashes is not None:
        shared["ensemble.member_sha256"] = list(member_hashes)
    return ModelBundle(
        model=net.eval(),
        labels=first.labels,
        clinical=first.clinical,
        thresholds=tuple(float(t) for t in thresholds),
        clinical_stats={n: dict(clinical_stats[n]) for n in first.clinical},
        image_size=first.image_size,
        resize=first.resize,
        params={**shared, **(params or {})},
    )


def check_members(members: Sequence[ModelBundle]) -> None:
    """Refuse members that cannot be averaged, naming what differs and in which member."""
    if not members:
        raise BundleError("an ensemble needs at least one member")
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        for name in ("labels", "clinical", "image_size", "resize"):
            mine, theirs = _plain(getattr(first, name)), _plain(getattr(member, name))
            if mine != theirs:
                raise BundleError(
                    f"ensemble members disagree on {name}: member 0 has {mine!r}, "
                    f"member {i} has {theirs!r}"
                )


def _plain(value: Any) -> Any:
    """Tuples and lists compare alike (a loaded bundle's sizes are tuples, a built one's may
    be lists)."""
    return tuple(value) if isinstance(value, list | tuple) else value
