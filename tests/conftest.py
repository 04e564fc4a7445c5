"""Shared fixtures. Tests that use the real files in `../shared` skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the checkout (real OLIVES labels, one B-scan, Kermany sample)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED
