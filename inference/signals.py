"""SIGINT and SIGTERM end a command at any moment, and training at a step boundary.

The CLI runs every command inside :func:`handled`. A signal is only *recorded* by the
handler, never raised asynchronously: an exception raised wherever Python happens to be can
land inside a callback from compiled code, where it is swallowed (JAX's garbage-collection
hook once ate early Ctrl-C) or aborts the process. The work notices the signal at its next
check point and raises :class:`Interrupted` (a ``KeyboardInterrupt`` with the exit status,
130 or 143) there:

- the training loop checks after every step, so the current step finishes and the last
  complete checkpoint stays;
- every progress update calls :func:`check`;
- the CLI checks when the command returns, so it never exits 0 after a signal.

Between check points (imports, one long call into compiled code, writing figures) a
watchdog thread ends the process ``grace`` seconds after the signal, with one line and the
same exit status. Every file is written atomically, so what was finished stays whole; the
temporary file of an interrupted write is removed at the next start in that folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Signals that end a run; the exit status is 128 + the signal number (130, 143).
SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Seconds the watchdog of :func:`handled` gives the work to reach a check point.
GRACE = 2.0

#: The first signal received in the current :func:`handled` block.
_STATE: dict[str, Any] = {"signum": None}


class Interrupted(KeyboardInterrupt):
    """A run ended by SIGINT or SIGTERM; ``status`` is the exit status (128 + signum)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        self.status = 128 + signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


def _handler(signum: int, frame: Any) -> None:
    if _STATE["signum"] is None:
        _STATE["signum"] = signum


@contextlib.contextmanager
def handled(grace: float = GRACE) -> Iterator[None]:
    """Record SIGINT and SIGTERM (main thread only) and run the watchdog; restore the
    previous handlers at the end.

    The watchdog learns of a signal at once through ``signal.set_wakeup_fd``, even while
    the main thread is inside compiled code; if the block has not ended ``grace`` seconds
    later, it prints the line and ends the process with 128 + the signal number.
    """
    _STATE.update(signum=None)
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            _STATE.update(signum=None)
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    done = threading.Event()
    watch = _start_watchdog(done, grace)
    try:
        yield
    finally:
        if watch is not None:  # the wakeup fd first, so no signal writes to a closed pipe
            signal.set_wakeup_fd(watch[0])
        for s, h in previous.items():
            signal.signal(s, h)
        done.set()
        if watch is not None:
            os.close(watch[1])  # the watchdog reads end-of-file and returns
            watch[2].join(timeout=5)
        signum = _STATE["signum"]
        _STATE.update(signum=None)  # a signal belongs to this block only
    if signum is not None:  # one that came after the work's last check point
        raise Interrupted(signum)


def _start_watchdog(done: threading.Event, grace: float
                    ) -> tuple[int, int, threading.Thread] | None:
    """The previous wakeup fd, our pipe's write end and the watchdog thread; None where a
    wakeup pipe cannot be set (Windows before Python 3.12)."""
    read, write = os.pipe()
    try:
        os.set_blocking(write, False)
        wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (OSError, ValueError):
        os.close(read)
        os.close(write)
        return None
    watchdog = threading.Thread(target=_watch, args=(read, done, grace), daemon=True)
    watchdog.start()
    return wakeup, write, watchdog


def _watch(read: int, done: threading.Event, grace: float) -> None:
    """Wait for a signal number on ``read``; end the process unless ``done`` within
    ``grace`` seconds."""
    try:
        while True:
            data = os.read(read, 64)
            if not data:
                return
            signum = next((b for b in data if b in SIGNALS), None)
            if signum is None:
                continue
            if _STATE.get("unwatched"):  # a launcher's own handlers act on it
                continue
            if done.wait(grace):
                return
            name = signal.Signals(signum).name
            sys.stderr.write(f"varbayes: interrupted by {name}; the work in progress is "
                             "dropped, files already written are kept (a training run: "
                             "rerun with --resume)\n")
            sys.stderr.flush()
            os._exit(128 + signum)
    finally:
        os.close(read)


def pending() -> int | None:
    """The signal received so far, or None."""
    return _STATE["signum"]


def clear() -> None:
    """Forget the recorded signal: the caller has acted on it (printed its line)."""
    _STATE.update(signum=None)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived."""
    if _STATE["signum"] is not None:
        raise Interrupted(_STATE["signum"])


def record(signum: int) -> None:
    """Record ``signum`` as if it had arrived (e.g. another rank of a distributed run was
    interrupted, so this one stops after the same step); a signal already recorded stays."""
    if _STATE["signum"] is None:
        _STATE["signum"] = signum


@contextlib.contextmanager
def unwatched() -> Iterator[None]:
    """Inside a :func:`handled` block: the default SIGINT / SIGTERM handlers back and no
    watchdog, for code that installs its own (a launcher that stops its child processes)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, signal.default_int_handler if s == signal.SIGINT
                                     else signal.SIG_DFL) for s in SIGNALS}
    _STATE["unwatched"] = True
    try:
        yield
    finally:
        _STATE.pop("unwatched", None)
        for s, h in previous.items():
            signal.signal(s, h)
