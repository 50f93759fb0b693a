"""Test set-up: CPU JAX, a headless matplotlib, and the shared data copies when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

#: The shared read-only data copies next to the checkout (never committed to the project).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if SHARED_DATA.is_dir() and not os.environ.get("VARBAYES_DATA"):
    os.environ["VARBAYES_DATA"] = str(SHARED_DATA)


@pytest.fixture
def shared_data() -> Path:
    """The shared data directory; skips the test when it is absent on this machine."""
    root = Path(os.environ.get("VARBAYES_DATA", SHARED_DATA))
    if not (root / "mnist").is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root
