"""Test set-up: CPU JAX, a headless matplotlib, the shared data copies when present, and one
compilation cache per test run.

The run's JAX and inductor compilation caches live in a fresh temporary folder that the
pytest-xdist workers and the CLI subprocesses share (through the environment), so a
function compiled by one test is loaded by the next; every run starts cold, as a clean
clone does. Under xdist each worker gets one torch thread: two workers with two threads
each on two cores make torch steps many times slower.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Set by the run that made the cache folder (the controller), which removes it at the end.
_OWN_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("VARBAYES_TEST_CACHE"):
        return  # an xdist worker, or a cache chosen by the caller: keep it
    root = tempfile.mkdtemp(prefix="varbayes-test-cache-")
    _OWN_CACHE.append(root)
    os.environ["VARBAYES_TEST_CACHE"] = root
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(root, "jax")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")


def pytest_unconfigure(config: pytest.Config) -> None:
    for root in _OWN_CACHE:
        shutil.rmtree(root, ignore_errors=True)

#: The shared read-only data copies next to the checkout (never committed to the project).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if SHARED_DATA.is_dir() and not os.environ.get("VARBAYES_DATA"):
    os.environ["VARBAYES_DATA"] = str(SHARED_DATA)


@pytest.fixture(autouse=True)
def _fresh_pyro_param_store():
    """Each test starts with an empty Pyro param store, the one global state we keep: a
    model's ``pyro.module`` would otherwise take a same-named param that an earlier test on
    the same worker left behind (with pytest-xdist the order of tests varies)."""
    pyro = sys.modules.get("pyro")
    if pyro is not None:
        pyro.clear_param_store()


@pytest.fixture
def shared_data() -> Path:
    """The shared data directory; skips the test when it is absent on this machine."""
    root = Path(os.environ.get("VARBAYES_DATA", SHARED_DATA))
    if not (root / "mnist").is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root
