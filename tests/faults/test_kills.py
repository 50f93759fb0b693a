"""kill -9 at random moments (issue 16, item 4): after every kill the folder holds a
complete checkpoint or none, ``--resume`` finishes the run, and the final weights, optimizer
state and history equal an uninterrupted run's bit for bit.

Every fourth kill is aimed inside a checkpoint write: the child writes slowly
(``killable.py --slow-write``) and is killed while its temporary file is on disk. Quick:
20 kills of a NumPyro run; long (``make faults``, ``VARBAYES_FAULTS_LONG=1``): 200, and a
Pyro run too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.vi.checkpoint import load_checkpoint

LONG = os.environ.get("VARBAYES_FAULTS_LONG") == "1"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kill -9, rlimits, /proc")
KILLABLE = Path(__file__).with_name("killable.py")
TRAIN = ["vae", "train", "--latent", "2", "--hidden", "20", "--n-train", "300", "--n-test",
         "50", "--batch-size", "50", "--epochs", "150", "--quiet"]


def _launch(argv: list[str], slow: float | None = None) -> subprocess.Popen:
    extra = ["--slow-write", str(slow)] if slow else []
    return subprocess.Popen([sys.executable, str(KILLABLE), *extra, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(argv: list[str]) -> None:
    p = _launch(argv)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err


def _temporaries(out: Path) -> list[Path]:
    return list(out.glob(".*.tmp")) if out.exists() else []


def _kill_inside_a_write(p: subprocess.Popen, out: Path, old: set[Path]) -> bool:
    """Kill ``p`` as soon as one of its atomic writes has a temporary file on disk (``old``:
    those a previous kill left)."""
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        if set(_temporaries(out)) - old:
            p.kill()
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"] if LONG else ["numpyro"])
def test_kill9_at_random_moments_then_resume_is_bit_identical(backend, tmp_path, fault_log):
    argv = [*TRAIN, "--backend", backend]
    ref = tmp_path / "ref"
    t = time.monotonic()
    _finish([*argv, "--out", str(ref)])
    seconds = time.monotonic() - t  # kill times scale with this machine's speed and load
    out = tmp_path / "run"
    rng = random.Random(9)
    kills = in_write = 0
    while kills < (200 if LONG else 20):
        resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
        aim, old = kills % 4 == 3, set(_temporaries(out))
        p = _launch([*argv, "--out", str(out), *resume], slow=0.05 if aim else None)
        if aim:
            in_write += _kill_inside_a_write(p, out, old)
        else:
            started = time.monotonic()
            try:
                p.wait(timeout=rng.uniform(0.2, seconds))
            except subprocess.TimeoutExpired:
                p.kill()
        p.communicate(timeout=60)
        kills += p.returncode == -9
        if p.returncode == 0:  # it finished before its kill: start over
            if not (aim or resume):  # a whole warm run: aim later kills inside its length
                seconds = time.monotonic() - started
            shutil.rmtree(out)
        if (out / "checkpoint.npz").exists():
            load_checkpoint(out / "checkpoint.npz")  # complete: never a torn file
    assert in_write >= (50 if LONG else 5), "no kill landed inside a checkpoint write"
    _finish([*argv, "--out", str(out), *(["--resume"] if (out / "checkpoint.npz").exists()
                                         else [])])
    want, want_header = load_checkpoint(ref / "checkpoint.npz")
    got, got_header = load_checkpoint(out / "checkpoint.npz")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name, strict=True)
    history = {k: v for k, v in got_header["history"].items() if k != "seconds"}
    assert history == {k: v for k, v in want_header["history"].items() if k != "seconds"}
    assert _temporaries(out) == [], "a killed write's temporary file was left behind"
    fault_log(f"kill -9 of `vae train --backend {backend}` at random moments ({in_write} "
              "inside a checkpoint write), then --resume", kills, kills,
              "the current epoch at most; the final weights, optimizer state and history "
              "equal an uninterrupted run's bit for bit")
