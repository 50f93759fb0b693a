"""One writer per ``--out`` folder, and a record of which command wrote it.

The CLI runs every command inside :func:`writer`. When the command creates its ``--out``
(:func:`varbayes.inference.io.out_dir`), the folder is claimed (:func:`claim`):

- a lock file ``.varbayes.lock`` is taken with ``flock`` and holds the writer's pid, host,
  command and start time. The kernel drops the lock when its process dies, so a killed writer
  never leaves a folder stuck; where ``flock`` is not supported the recorded pid is checked.
  The file stays after the run (pid cleared) and also names the folder's *owner*, the first
  command that wrote there: ``--force`` lets another command write, not take it over;
- a second writer is refused with one line naming the holder;
- a folder that another command wrote (its record, else its ``metrics.json``) is refused
  unless ``--force``, so that no command overwrites another one's outputs;
- temporary files left by a killed writer (``.NAME.XXXXXXXX.tmp``, see
  :func:`varbayes.inference.io.temp_file`) are removed: only the lock holder writes there.

Leaving :func:`writer` releases the locks. Outside a :func:`writer` session
(library use) :func:`claim` does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from varbayes.models.errors import VarbayesError

LOCK_NAME = ".varbayes.lock"

#: The names :func:`varbayes.inference.io.temp_file` gives: ``.NAME.`` + mkstemp's 8
#: characters + ``.tmp``.
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

#: The session of the running command (the CLI runs one command per process).
_SESSION: dict[str, Any] = {"command": None, "force": False, "held": {}}


@contextlib.contextmanager
def writer(command: str, *, force: bool = False) -> Iterator[None]:
    """Run one command (e.g. ``"vae train"``) as the writer of the folders it claims;
    release them all at the end."""
    _SESSION.update(command=command, force=force, held={})
    try:
        yield
    finally:
        held = _SESSION["held"]
        _SESSION.update(command=None, force=False, held={})
        for folder, fd in held.items():
            _release(folder, fd)


def command() -> str | None:
    """The running command's name (recorded in ``metrics.json``), None outside a session."""
    return _SESSION["command"]


def claim(folder: str | os.PathLike[str]) -> None:
    """Lock ``folder`` for the running command, refuse another command's outputs, and remove
    temporary files that a killed writer left. A no-op outside :func:`writer`."""
    if _SESSION["command"] is None:
        return
    p = Path(folder).resolve()
    if p in _SESSION["held"]:
        return
    fd, owner = _lock(p)
    try:
        owner = owner or (_json_object(p / "metrics.json") or {}).get("command")
        if not _SESSION["force"]:
            _check_provenance(p, owner)
        _write_record(fd, {"owner": owner or _SESSION["command"], "pid": os.getpid(),
                           "host": socket.gethostname(), "command": _SESSION["command"],
                           "started": time.time()})
        _clean_leftovers(p)
    except BaseException:
        os.close(fd)
        raise
    _SESSION["held"][p] = fd


def holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file of ``folder`` says: its owner (the command whose outputs the folder
    holds) and its last writer (pid, host, command, started); None when there is none or it
    cannot be read."""
    return _json_object(Path(folder) / LOCK_NAME)


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None for a missing, unreadable or corrupt file."""
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    try:
        when = time.strftime(", started %Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        when = ""
    return (f"pid {info.get('pid')} on {info.get('host')} "
            f"('varbayes {info.get('command')}'{when})")


def _refuse(folder: Path, info: dict[str, Any] | None) -> VarbayesError:
    return VarbayesError(f"--out {folder} is being written by {_describe(info)}: wait for it "
                         f"to finish, or pass another --out (its lock: {LOCK_NAME})")


def _lock(folder: Path) -> tuple[int, str | None]:
    """Take the folder's lock; return the open descriptor and the folder's owner, the command
    whose outputs it holds (None for a new folder)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _flock(fd)
        info = holder(folder)
        if locked is False or (locked is None and info and info.get("pid") and _alive(info)):
            raise _refuse(folder, info)
    except BaseException:
        os.close(fd)
        raise
    info = info or {}
    return fd, info.get("owner", info.get("command"))


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    while data:
        data = data[os.write(fd, data):]


def _flock(fd: int) -> bool | None:
    """True: locked; False: held by another process; None: no lock on this file system.

    POSIX ``flock``, or ``msvcrt.locking`` of the first byte on Windows; both go with the
    process."""
    try:
        import fcntl
    except ImportError:
        return _windows_lock(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return True


def _windows_lock(fd: int) -> bool | None:
    try:
        import msvcrt
    except ImportError:
        return None
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _alive(info: dict[str, Any]) -> bool:
    """Whether the recorded writer still runs (a writer on another host counts as alive;
    so does any on Windows, where ``os.kill`` would end it)."""
    if info.get("host") != socket.gethostname() or os.name == "nt":
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _release(folder: Path, fd: int) -> None:
    """Mark the record finished (no pid) and drop the lock; the file stays as the record of
    the folder's last writer."""
    try:
        info = holder(folder) or {}
        _write_record(fd, {**info, "pid": None, "finished": time.time()})
    except OSError:
        pass  # best effort: the kernel lock goes with the descriptor anyway
    finally:
        os.close(fd)


def _check_provenance(folder: Path, written_by: str | None) -> None:
    """Refuse a folder that holds another command's outputs (its owner: the lock file's,
    else the command in its ``metrics.json``)."""
    if written_by and written_by != _SESSION["command"]:
        raise VarbayesError(f"--out {folder} holds the outputs of 'varbayes {written_by}': "
                            f"'varbayes {_SESSION['command']}' would overwrite them; pass "
                            "another --out (or --force)")


def _clean_leftovers(folder: Path) -> None:
    """Remove the temporary files of a killed writer (we hold the folder's lock)."""
    for p in folder.iterdir():
        if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
