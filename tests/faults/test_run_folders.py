"""One writer per run folder (issue 16, items 1 to 3): a live writer's lock refuses a second
one with a line naming it, a dead writer's lock does not stick, no command overwrites
another one's outputs without --force, and a killed writer's temporary files are removed.
The slow tests run two real trainers on one folder and read a checkpoint while it trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference import io, runlock
from varbayes.inference.cli import main
from varbayes.inference.vi.checkpoint import load_checkpoint

DENOISE = ["ising", "denoise", "--image", "shapes", "--iters", "2", "--quiet"]
fcntl = pytest.importorskip("fcntl")  # POSIX locks

TRAIN = ["vae", "train", "--latent", "2", "--hidden", "20", "--n-train", "300", "--n-test",
         "50", "--batch-size", "50", "--quiet"]


def _record(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / runlock.LOCK_NAME).write_text(json.dumps(fields))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_live_writer_is_named_and_a_second_one_refused(tmp_path, capsys):
    out = tmp_path / "out"
    _record(out, pid=4242, host="elsewhere", command="vae train", started=0)
    fd = os.open(out / runlock.LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another writer holds it
    try:
        assert main([*DENOISE, "--out", str(out)]) == 2
        line = _one_line(capsys)
        assert "is being written by pid 4242 on elsewhere ('varbayes vae train'" in line, line
        assert "--force" not in line  # no option overrides a live writer
        assert main([*DENOISE, "--out", str(out), "--force"]) == 2
    finally:
        os.close(fd)
    assert not (out / "metrics.json").exists()


def test_a_dead_writers_lock_does_not_stick(tmp_path, capsys):
    out = tmp_path / "out"
    _record(out, pid=_dead_pid(), host=os.uname().nodename, command="ising denoise")
    assert main([*DENOISE, "--out", str(out)]) == 0
    record = runlock.holder(out)
    assert record["command"] == "ising denoise" and record["pid"] is None  # released
    assert json.loads((out / "metrics.json").read_text())["command"] == "ising denoise"


@pytest.mark.parametrize("alive", [True, False])
def test_without_flock_the_recorded_pid_decides(alive, tmp_path, monkeypatch, capsys):
    """On a file system without ``flock`` a live pid on this host refuses, a dead one not."""
    monkeypatch.setattr(runlock, "_flock", lambda fd: None)
    out = tmp_path / "out"
    pid = os.getppid() if alive else _dead_pid()
    _record(out, pid=pid, host=os.uname().nodename, command="ising denoise")
    assert main([*DENOISE, "--out", str(out)]) == (2 if alive else 0)
    if alive:
        assert f"is being written by pid {pid}" in _one_line(capsys)


@pytest.mark.parametrize("where", ["record", "metrics"])
def test_another_commands_outputs_need_force(where, tmp_path, capsys):
    out = tmp_path / "out"
    if where == "record":
        _record(out, pid=None, command="vae train")
    else:
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({"command": "vae sample", "n": 3}))
    assert main([*DENOISE, "--out", str(out)]) == 2
    line = _one_line(capsys)
    written_by = "vae train" if where == "record" else "vae sample"
    assert (f"holds the outputs of 'varbayes {written_by}': 'varbayes ising denoise' would "
            "overwrite them; pass another --out (or --force)") in line, line
    assert not (out / "denoised.png").exists()
    assert main([*DENOISE, "--out", str(out)]) == 2  # the refusal kept the record
    capsys.readouterr()
    assert main([*DENOISE, "--out", str(out), "--force"]) == 0
    assert main([*DENOISE, "--out", str(out)]) == 2  # --force let it write, not take over
    assert runlock.holder(out)["owner"] == written_by if where == "record" else True


def test_a_forced_writer_leaves_the_run_to_its_trainer(tmp_path):
    """``vae sample RUN --out RUN --force`` must not stop ``vae train --resume`` there."""
    out = tmp_path / "run"
    _record(out, pid=None, command="vae train", owner="vae train")
    assert main([*DENOISE, "--out", str(out), "--force"]) == 0
    with runlock.writer("vae train"):
        runlock.claim(out)  # not refused
    assert runlock.holder(out)["owner"] == "vae train"


@pytest.mark.slow
def test_a_corrupt_lock_record_is_not_a_traceback(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / runlock.LOCK_NAME).write_text("[" * 100_000)
    assert main([*DENOISE, "--out", str(out)]) == 0


def test_a_killed_writers_temporary_files_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    left = [out / ".metrics.json.k3_9xq2a.tmp", out / ".checkpoint.npz.abcdefgh.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    mine = [out / "notes.tmp", out / ".cache.tmp"]  # not named like ours: kept
    for p in mine:
        p.write_text("the user's")
    assert main([*DENOISE, "--out", str(out)]) == 0
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in mine)


def test_library_use_takes_no_lock(tmp_path):
    """Outside the CLI, out_dir and write_metrics stay plain (no lock file, no command)."""
    out = io.out_dir(tmp_path / "o")
    io.write_metrics(out, {"a": 1})
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert json.loads((out / "metrics.json").read_text()) == {"a": 1}


def _varbayes(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "varbayes", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(predicate, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_trainers_on_one_folder_and_a_reader_while_it_trains(tmp_path, fault_log):
    """The second trainer (another latent size, or --resume) is refused while the first
    runs; a reader always sees a complete checkpoint; SIGTERM leaves one to resume."""
    out = tmp_path / "run"
    first = _varbayes([*TRAIN, "--epochs", "100000", "--out", str(out)])
    try:
        _wait_for(lambda: (out / "checkpoint.npz").exists())
        record = runlock.holder(out)
        assert record["pid"] == first.pid and record["command"] == "vae train"
        for extra in (["--latent", "3"], ["--resume"]):
            second = subprocess.run([sys.executable, "-m", "varbayes", *TRAIN, *extra,
                                     "--epochs", "5", "--out", str(out)],
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert f"is being written by pid {first.pid}" in second.stderr
        epochs = []
        deadline = time.monotonic() + 60
        while len(epochs) < 200 or epochs[-1] == epochs[0]:  # a reader of the live folder
            _, header = load_checkpoint(out / "checkpoint.npz")
            epochs.append(header["epoch"])
            assert time.monotonic() < deadline, "the trainer made no progress"
        assert epochs == sorted(epochs)
    finally:
        first.terminate()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "rerun with --resume" in err
    arrays, header = load_checkpoint(out / "checkpoint.npz")
    assert header["epoch"] >= epochs[-1] and all(np.isfinite(a).all() for a in
                                                 arrays.values() if a.dtype.kind == "f")
    assert runlock.holder(out)["pid"] is None
    fault_log("a second `vae train` and a second `--resume` on a folder being trained", 2, 2,
              "nothing: refused with the holder's pid, exit 2")
    fault_log("a reader loading checkpoint.npz while it is rewritten every epoch",
              len(epochs), len(epochs), "nothing: every read saw a complete checkpoint")
