"""A full disk and a read-only ``--out`` for every command group (issue 16, item 3): one error
line naming the file and the cause, the previous checkpoint intact, no temporary file left.

The full disk is ``RLIMIT_FSIZE`` in the child (``killable.py --file-size-limit``): every
write past the limit fails with EFBIG, as ``write`` fails with ENOSPC on a full file system,
at the same moment (mounting a small tmpfs needs privileges that CI lacks). The read-only
folder is one under ``/proc``, which even root cannot write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from varbayes.inference import io
from varbayes.inference.cli import main

KILLABLE = Path(__file__).with_name("killable.py")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kill -9, rlimits, /proc")
LIMIT = 8 * 1024  # bytes: metrics.json and the lock record fit; a figure or checkpoint not
TRAIN = ["vae", "train", "--latent", "2", "--hidden", "20", "--n-train", "200", "--n-test",
         "50", "--batch-size", "50", "--quiet"]
NUTS = ["--n-data", "1", "--chains", "1", "--warmup", "10", "--samples", "10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    io.set_quiet(True)
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _commands(run):
    return {
        "ising": ["ising", "denoise", "--image", "shapes", "--iters", "2"],
        "vae": ["vae", "sample", str(run), "--n", "16"],
        "evidence": ["evidence", str(run), "--estimators", "elbo,is", "--k", "10",
                     "--n-data", "4"],
        "mcmc": ["mcmc", str(run), *NUTS],
        "compare": ["compare", str(run), *NUTS],
        "demo": ["demo", "--quick"],
    }


def _varbayes_on_a_full_disk(argv: list[str]) -> subprocess.CompletedProcess:
    # the test run's compilation caches are read but never written: a write past the limit
    # would leave a truncated entry for the other tests
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1e9"
    return subprocess.run([sys.executable, str(KILLABLE), "--file-size-limit", str(LIMIT), *argv,
                           "--quiet"], capture_output=True, text=True, timeout=600, env=env)


def _one_efbig_line(p: subprocess.CompletedProcess, out) -> None:
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("varbayes")]
    assert len(lines) == 1 and "File too large (EFBIG)" in lines[0] and str(out) in lines[0], (
        p.stderr)
    assert list(out.glob(".*.tmp")) == [], "a temporary file was left"


@pytest.mark.slow
@pytest.mark.parametrize("group", ["ising", "vae", "evidence", "mcmc", "compare", "demo"])
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(group, run, tmp_path, fault_log):
    out = tmp_path / "out"
    p = _varbayes_on_a_full_disk([*_commands(run)[group], "--out", str(out)])
    _one_efbig_line(p, out)
    fault_log(f"full disk (RLIMIT_FSIZE {LIMIT} B) during `varbayes {_commands(run)[group][0]}`",
              1, 1, "the file being written; exit 1, one line, no partial file")


@pytest.mark.slow
def test_a_full_disk_in_training_keeps_the_previous_checkpoint(run, tmp_path, fault_log):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = (out / "checkpoint.npz").read_bytes()
    p = _varbayes_on_a_full_disk([*TRAIN, "--epochs", "4", "--resume", "--out", str(out)])
    _one_efbig_line(p, out)
    assert "checkpoint.npz" in p.stderr
    assert (out / "checkpoint.npz").read_bytes() == before
    fault_log("full disk at a checkpoint write of `vae train --resume`", 1, 1,
              "the epoch being written; the previous checkpoint byte for byte")


@pytest.mark.slow
@pytest.mark.parametrize("group", ["ising", "vae", "evidence", "mcmc", "compare", "demo",
                                   "train"])
def test_a_read_only_out_is_refused_before_any_work(group, run, capsys, fault_log):
    argv = [*TRAIN, "--epochs", "2"] if group == "train" else _commands(run)[group]
    assert main([*argv, "--out", "/proc/self/fdinfo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out /proc/self/fdinfo is not writable" in err[0], err
    fault_log(f"read-only --out for `varbayes {argv[0]}`", 1, 1,
              "nothing: refused before any work, exit 2")
