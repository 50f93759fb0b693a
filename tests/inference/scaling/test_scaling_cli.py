"""``varbayes vae train --devices N`` and ``--nproc N``: the one-process run's checkpoint,
resume after a kill, the time limit, and one line for every bad configuration."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.vi.checkpoint import load_checkpoint

TRAIN = ["vae", "train", "--n-train", "400", "--n-test", "100", "--hidden", "32",
         "--latent", "4", "--quiet"]
PYRO = [*TRAIN, "--backend", "pyro", "--compiler", "torchscript"]


def _env(devices: int = 1) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("VARBAYES_LAUNCH_ARGV", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _varbayes(argv: list[str], devices: int = 1, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "varbayes", *argv], env=_env(devices),
                          capture_output=True, text=True, timeout=300, **kw)


def _checkpoint(folder: Path) -> tuple[dict, dict]:
    return load_checkpoint(folder / "checkpoint.npz")


def _assert_identical(a: Path, b: Path) -> None:
    (xa, ha), (xb, hb) = _checkpoint(a), _checkpoint(b)
    assert ha["epoch"] == hb["epoch"]
    assert sorted(xa) == sorted(xb)
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("argv, devices, message", [
    (["--devices", "2"], 1, "--devices 2 but JAX sees 1 cpu device(s): pass --devices 1 or "
                            "fewer, or on a CPU, start it with XLA_FLAGS="
                            "--xla_force_host_platform_device_count=2"),
    (["--devices", "2", "--batch-size", "99"], 2, "--batch-size 99 does not divide by "
                                                  "--devices 2: use 98 or 100"),
    (["--devices", "2", "--backend", "pyro"], 2, "--devices 2 is for the NumPyro backend: run "
                                                 "a Pyro model on several processes with "
                                                 "--nproc N"),
    (["--nproc", "2"], 1, "--nproc 2 is for the Pyro backend: a NumPyro run uses several "
                          "devices with --devices 2"),
    (["--nproc", "2", "--backend", "pyro", "--batch-size", "99"], 1,
     "--batch-size 99 does not divide by --nproc 2: use 98 or 100"),
    (["--nproc", "0"], 1, "--nproc must be >= 1, got 0"),
])
def test_bad_configurations_are_one_line(tmp_path, argv, devices, message):
    done = _varbayes([*TRAIN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], devices)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"varbayes vae train: error: {message}"[:len(lines[0])]] or \
        (len(lines) == 1 and message in lines[0]), done.stderr


@pytest.mark.slow
def test_torchrun_on_a_numpyro_run_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "varbayes", *TRAIN, "--epochs", "1",
                           "--out", str(tmp_path / "r")], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("varbayes vae")]
    assert ours == ["varbayes vae train: error: torchrun started this NumPyro run: NumPyro "
                    "runs in one process and uses several devices with --devices N; torchrun "
                    "and --nproc are for the Pyro backend"], done.stderr[-2000:]


@pytest.mark.slow
def test_devices_2_writes_the_one_device_run(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, extra in ((one, []), (two, ["--devices", "2"])):
        done = _varbayes([*TRAIN, "--epochs", "3", *extra, "--out", str(folder)], devices=2)
        assert done.returncode == 0, done.stderr
    (xa, ha), (xb, hb) = _checkpoint(one), _checkpoint(two)
    assert ha["epoch"] == hb["epoch"] == 3
    for k in xa:
        np.testing.assert_allclose(xb[k], xa[k], rtol=1e-4, atol=1e-6, err_msg=k)
    import json

    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["processes"] == 1


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_end(tmp_path):
    """SIGKILL to the whole job (launcher and ranks) at a random moment, then --resume."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    argv = [*PYRO, "--nproc", "2", "--epochs", "40"]
    done = _varbayes([*argv, "--out", str(whole)])
    assert done.returncode == 0, done.stderr
    assert {"checkpoint.npz", "metrics.json"} <= {p.name for p in whole.iterdir()}
    job = subprocess.Popen([sys.executable, "-m", "varbayes", *argv, "--out", str(killed)],
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.npz").exists():
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    os.killpg(job.pid, signal.SIGKILL)  # the launcher: its ranks get SIGTERM from the kernel
    job.wait(timeout=30)
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-f", f"--out {killed}"], capture_output=True).stdout:
        assert time.monotonic() < deadline, "a rank outlived its launcher"
        time.sleep(0.1)
    _, header = _checkpoint(killed)
    assert 1 <= header["epoch"] < 40
    done = _varbayes([*argv, "--resume", "--out", str(killed)])
    assert done.returncode == 0, done.stderr
    _assert_identical(whole, killed)


@pytest.mark.slow
def test_two_ranks_stop_together_at_the_time_limit_and_resume(tmp_path):
    out = tmp_path / "r"
    done = _varbayes([*PYRO, "--nproc", "2", "--epochs", "50", "--time-limit", "0.0001",
                      "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert _checkpoint(out)[1]["epoch"] == 1
    done = _varbayes([*PYRO, "--epochs", "3", "--resume", "--out", str(out)])  # on 1 process
    assert done.returncode == 0, done.stderr
    assert _checkpoint(out)[1]["epoch"] == 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_jax_processes_with_two_devices_each_train_the_four_device_run(tmp_path):
    """jax.distributed on localhost: 2 processes x 2 forced host devices = one 4-device
    mesh; process 0 writes, and the run is the one-process 4-device run."""
    argv = [*TRAIN, "--epochs", "3", "--devices", "4"]
    hosts, one = tmp_path / "hosts", tmp_path / "one"
    port = _free_port()
    jobs = [subprocess.Popen([sys.executable, "-m", "varbayes", *argv, "--out", str(hosts)],
                             env={**_env(2), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                  "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]
    outs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outs
    assert "wrote" in outs[0][0] and "wrote" not in outs[1][0]  # process 0 prints, writes
    done = _varbayes([*argv, "--out", str(one)], devices=4)
    assert done.returncode == 0, done.stderr
    (xa, ha), (xb, hb) = _checkpoint(one), _checkpoint(hosts)
    assert ha["epoch"] == hb["epoch"] == 3
    for k in xa:
        scale = max(float(np.abs(xa[k]).max()), 1e-30)
        assert float(np.abs(xa[k] - xb[k]).max()) <= 1e-4 * scale, k
