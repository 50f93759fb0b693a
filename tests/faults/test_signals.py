"""SIGINT and SIGTERM (issue 16, item 4): at any moment they end the command with exit status
130 / 143 and one line, never exit 0; in training the current step finishes, the last
complete checkpoint stays, and the line says how to resume.

Quick: 20 SIGINTs 0.5 to 5 s after start (the first seconds once swallowed Ctrl-C); long
(``make faults``, ``VARBAYES_FAULTS_LONG=1``): 100.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from varbayes.inference import signals
from varbayes.inference.vi.checkpoint import load_checkpoint

LONG = os.environ.get("VARBAYES_FAULTS_LONG") == "1"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, Linux /proc")

#: Commands that run longer than 5 s here, so that every signal lands while they work.
COMMANDS = [
    ["vae", "train", "--latent", "2", "--hidden", "20", "--n-train", "300", "--n-test", "50",
     "--batch-size", "50", "--epochs", "100000"],
    ["ising", "denoise", "--image", "shapes", "--method", "gibbs", "--iters", "1000000"],
    ["vae", "train", "--backend", "pyro", "--latent", "2", "--hidden", "20", "--n-train", "300",
     "--n-test", "50", "--batch-size", "50", "--epochs", "100000"],
]


def test_a_signal_is_recorded_and_raised_at_the_next_check():
    with pytest.raises(signals.Interrupted) as at_exit:
        with signals.handled(grace=60):  # no watchdog exit of this test process
            signals.check()  # nothing yet
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert signals.pending() == signal.SIGTERM
            with pytest.raises(signals.Interrupted) as e:
                signals.check()
            assert e.value.status == 143 and "SIGTERM" in str(e.value)
    assert at_exit.value.status == 143  # caught and not acted on: the block raises it again
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored
    assert signals.pending() is None
    with signals.handled(grace=60):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        signals.clear()  # acted on (the CLI printed its line): nothing more at the end


def test_the_watchdog_ends_work_stuck_between_check_points():
    """A child stuck in one long call (no check point) still ends, 130, one line."""
    code = ("import sys, time\n"
            "from varbayes.inference import signals\n"
            "with signals.handled(grace=0.5):\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "sys.exit(0)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and time.monotonic() - t < 10, (p.returncode, err)
    assert err.strip().startswith("varbayes: interrupted by SIGINT") and len(
        err.strip().splitlines()) == 1, err


def _launch(argv: list[str], out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "varbayes", *argv, "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_sigint_at_random_moments_never_exits_0(tmp_path, fault_log):
    """Two commands at a time (each waits for its signal, then perhaps for the watchdog),
    each signalled at its own random moment."""
    rng = random.Random(16)
    tries = 100 if LONG else 20
    for first in range(0, tries, 2):
        batch = []
        for i in range(first, min(first + 2, tries)):
            argv = COMMANDS[i % len(COMMANDS)]
            batch.append((argv, tmp_path / f"run{i}", rng.uniform(0.5, 5.0)))
        started = time.monotonic()
        procs = [_launch(argv, out) for argv, out, _ in batch]
        by_delay = sorted(zip(batch, procs, strict=True), key=lambda b: b[0][2])
        for (argv, _, delay), p in by_delay:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            assert p.poll() is None, f"{argv} ended before its signal: {p.communicate()}"
            p.send_signal(signal.SIGINT)
        for (argv, out, _), p in zip(batch, procs, strict=True):
            _, err = p.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert p.returncode == 130, (argv, p.returncode, err)
            assert "Traceback" not in err and "interrupted by SIGINT" in lines[-1], err
            if (out / "checkpoint.npz").exists():
                load_checkpoint(out / "checkpoint.npz")  # complete, readable
                assert "rerun with --resume" in lines[-1], lines[-1]
            assert not list(out.glob(".*.tmp")) if out.exists() else True
    fault_log("SIGINT 0.5 to 5 s after the start of `vae train` (NumPyro, Pyro) or "
              "`ising denoise --method gibbs`", tries, tries,
              "nothing finished: exit 130 with one line, a checkpoint complete or absent")


@pytest.mark.slow
def test_sigterm_in_training_keeps_the_checkpoint_and_resume_finishes(tmp_path, fault_log):
    out = tmp_path / "run"
    argv = [*COMMANDS[0][:-1], "400"]
    p = _launch(argv, out)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists():
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    _, header = load_checkpoint(out / "checkpoint.npz")
    done = header["epoch"]
    assert (f"in epoch {done + 1} of 400; {out / 'checkpoint.npz'} holds {done} complete "
            "epoch(s): rerun with --resume to continue") in err.strip().splitlines()[-1], err
    p = _launch([*argv, "--resume"], out)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert load_checkpoint(out / "checkpoint.npz")[1]["epoch"] == 400
    fault_log("SIGTERM during training, then --resume", 1, 1,
              "the current epoch: exit 143, the last complete checkpoint kept and resumed")
