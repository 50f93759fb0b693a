"""Output plumbing shared by every command: ``--out`` folders, ``metrics.json``,
atomic writes, figures, progress bars and InferenceData netCDF files.

Nothing here runs at import time; folders are created only when a command writes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from varbayes.inference import runlock, signals
from varbayes.models.errors import VarbayesError

T = TypeVar("T")

#: Set by the CLI: ``--quiet`` silences our progress; ``--verbose`` lets other libraries'
#: own bars (NumPyro's MCMC) through.
_QUIET = {"value": False}
_VERBOSE = {"value": False}

#: Seconds between two plain progress lines when stderr is not a terminal (a log file).
def _log_every() -> float:
    try:
        return max(float(os.environ.get("VARBAYES_LOG_EVERY", "30")), 0.0)
    except ValueError:
        return 30.0


LOG_EVERY = _log_every()


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress display made here."""
    _QUIET["value"] = bool(quiet)


def set_verbose(verbose: bool) -> None:
    """Let other libraries' progress bars through (``--verbose``)."""
    _VERBOSE["value"] = bool(verbose)


def quiet() -> bool:
    """True when ``--quiet`` was given."""
    return _QUIET["value"]


def verbose() -> bool:
    """True when other libraries may show their own progress bars."""
    return _VERBOSE["value"] and not _QUIET["value"]


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """One progress display for a whole piece of work: a tqdm bar on a terminal; in a log
    (stderr not a terminal) a plain line every :data:`LOG_EVERY` seconds and one at the end,
    ``desc: 120/800 (15%), objective -25.31, elapsed 0:12, ETA 1:08``; nothing when quiet.

    ``note(**fields)`` sets what follows the counts (the bar's postfix), e.g. the epoch and
    the current ELBO. With ``time_limit`` (seconds) sooner than the count's end, the line
    shows the time left to it instead of the ETA (the work then ends its current unit).
    """

    def __init__(self, total: int | None, desc: str, *, stream: Any = None,
                 every: float | None = None, quiet: bool = False,
                 time_limit: float | None = None) -> None:
        import sys
        import time

        self.total, self.desc, self.n, self.shown = total, desc, 0, -1
        self.time_limit = time_limit
        self.stream = sys.stderr if stream is None else stream
        self.every = LOG_EVERY if every is None else every
        self.fields: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.quiet = quiet or _QUIET["value"]  # quiet: e.g. a rank other than 0
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = None
        if not self.quiet and isatty:
            self.bar = tqdm(total=total, desc=desc, leave=False, file=self.stream,
                            dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        import time

        signals.check()  # a signal swallowed by a callback ends the work here
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and time.monotonic() - self.last >= self.every:
            self._line()

    def note(self, **fields: Any) -> None:
        """Set the fields shown after the counts (floats with 4 significant digits)."""
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix_str(self._fields(), refresh=False)

    def close(self) -> None:
        """End the display: the bar is cleared; a log gets its last line."""
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet and self.n and self.n != self.shown:
            self._line()

    def _fields(self) -> str:
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.fields.items())

    def _line(self) -> None:
        import time

        now = time.monotonic()
        self.last, self.shown = now, self.n
        elapsed = now - self.start
        counts = f"{self.n}"
        eta = ""
        if self.total:
            counts += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
            if self.n:
                left = elapsed / self.n * (self.total - self.n)
                if self.time_limit is not None and self.time_limit - elapsed < left:
                    eta = f", time limit in {_clock(self.time_limit - elapsed)}"
                else:
                    eta = f", ETA {_clock(left)}"
        extra = f", {self._fields()}" if self.fields else ""
        print(f"{self.desc}: {counts}{extra}, elapsed {_clock(elapsed)}{eta}",
              file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``iterable`` with a :class:`Progress` display (a bar on a terminal, plain
    periodic lines in a log, nothing with ``--quiet``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc) as bar:
        for item in iterable:
            yield item
            bar.update()


def out_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed and return it; fail clearly, before any work,
    if it is a file or cannot be written (a file is created there and removed).

    Under the CLI the folder is then claimed for this command (:func:`.runlock.claim`): a
    second writer, or another command's outputs without ``--force``, are refused, and the
    temporary files of a killed writer are removed."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VarbayesError(f"--out {p} exists and is not a directory: choose another path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VarbayesError(f"cannot create --out {p}: {e.strerror}") from None
    try:
        fd, probe = temp_file(p / "write-test", suffix=".probe")  # not a leftover's name
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise VarbayesError(f"--out {p} is not writable ({e.strerror}): choose a folder you "
                            "can write to") from None
    runlock.claim(p)
    return p


def umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def temp_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file beside ``path``, for an atomic replace.

    ``mkstemp`` creates files 0600; this one gets the mode an ordinary ``open`` would
    (0666 less the umask: 0644 under the usual 022), so that a colleague in the same group
    can read a run.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=suffix)
    try:  # best effort: a file system without modes keeps mkstemp's
        os.chmod(tmp, 0o666 & ~umask())
    except (OSError, NotImplementedError):
        pass
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial file. The
    file's mode honours the umask (0644 under 022).
    """
    p = Path(path)
    fd, tmp = temp_file(p)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # the file, not fd or temp
            raise OSError(e.errno, e.strerror, str(p)) from e
        raise
    return p


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def write_metrics(out: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (flat keys, SI units, log-likelihoods in nats) atomically.

    Under the CLI it also records the command that wrote it (``"command": "vae train"``)."""
    if runlock.command() is not None:
        metrics = {"command": runlock.command(), **metrics}
    text = json.dumps(_jsonable(metrics), indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(Path(out) / "metrics.json", text.encode())


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``metrics.json`` (a JSON object) from a run folder, with a clear error when it is
    missing, is not UTF-8 JSON or holds something other than an object."""
    p = Path(run_dir) / "metrics.json"
    if not p.is_file():
        raise VarbayesError(f"no metrics.json in {run_dir}: pass a folder written by varbayes")
    fix = "the file is corrupt: run the command again or pass another folder"
    try:
        metrics = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise VarbayesError(f"{p} is not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise VarbayesError(f"{p} is not valid JSON ({e.msg} at line {e.lineno}); {fix}"
                            ) from None
    except (ValueError, RecursionError) as e:  # an integer of over 4300 digits, deep nesting
        raise VarbayesError(f"{p} is not valid JSON ({type(e).__name__}); {fix}") from None
    if not isinstance(metrics, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(metrics), "number")
        raise VarbayesError(f"{p} holds a JSON {kind}, not an object of metrics; {fix}")
    return metrics


def save_array(path: str | os.PathLike[str], array: Any) -> Path:
    """Write one array as ``.npy`` atomically (readable with ``allow_pickle=False``)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save a matplotlib figure (PNG, or the format of the path's suffix) atomically, like
    every output, and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi,
                    bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def save_inferencedata(idata: Any, path: str | os.PathLike[str]) -> Path:
    """Write InferenceData to netCDF (HDF5) atomically, like every output.

    The file is built in memory, one group after the other as ``InferenceData.to_netcdf``
    does (numeric variables zlib-compressed), and then written by
    :func:`atomic_write_bytes`: HDF5 writing straight to a full disk crashed the process.
    """
    import io

    buf = io.BytesIO()
    for i, group in enumerate(idata.groups()):
        ds = getattr(idata, group)
        encoding = {name: {"zlib": True} for name, var in ds.data_vars.items()
                    if np.issubdtype(var.dtype, np.number)}
        ds.to_netcdf(buf, mode="w" if i == 0 else "a", group=group, engine="h5netcdf",
                     encoding=encoding)
    return atomic_write_bytes(path, buf.getvalue())


def load_inferencedata(path: str | os.PathLike[str], *, timeout: float | None = None):
    """Read InferenceData from netCDF (data only: no code runs), with clear errors.

    The file is read first in a child process (every group, attribute, dimension and array,
    through h5netcdf): on a corrupt file the HDF5 C library can loop forever or crash, and
    that must not happen to this process. A child still reading after ``timeout`` seconds
    (default 60 s plus 1 s per 10 MB) is stopped and the file refused, as is a file the
    child could not read. The file is then loaded here eagerly, so that a bad array fails
    now and the file is closed on return. The child costs a Python start (about 0.3 s).
    """
    import subprocess
    import sys

    import arviz as az

    p = Path(path)
    if not p.is_file():
        raise VarbayesError(f"no InferenceData file at {p}: run 'varbayes mcmc' first")
    bad = f"{p} is not a readable InferenceData netCDF file"
    fix = "write it again or pass another file"
    probe = ("import sys, h5netcdf\n"
             "def walk(g):\n"
             "    dict(g.attrs), dict(g.dimensions)\n"
             "    for v in g.variables.values():\n"
             "        v.dimensions, dict(v.attrs), v[...]\n"
             "    for c in g.groups.values():\n"
             "        walk(c)\n"
             "try:\n"
             "    with h5netcdf.File(sys.argv[1], 'r') as f:\n"
             "        walk(f)\n"
             "except Exception as e:\n"
             "    print(' '.join(f'{type(e).__name__}: {e}'.split()))\n"
             "    sys.exit(3)\n")
    limit = timeout if timeout is not None else 60.0 + p.stat().st_size / 1e7
    try:
        child = subprocess.run([sys.executable, "-c", probe, str(p)], capture_output=True,
                               timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise VarbayesError(f"{bad}: reading it hangs the HDF5 library (stopped after "
                            f"{limit:g} s); it is corrupt: {fix}") from None
    if child.returncode < 0:
        raise VarbayesError(f"{bad}: reading it crashes the HDF5 library (signal "
                            f"{-child.returncode}); it is corrupt: {fix}")
    if child.returncode == 3:  # the file failed there (another failure: the read below says)
        reason = child.stdout.decode(errors="replace").strip()
        raise VarbayesError(f"{bad} ({reason}); {fix}")
    try:
        with az.rc_context({"data.load": "eager"}):
            return az.from_netcdf(p)
    except Exception as e:  # netCDF/HDF5 raise many types for a bad file
        reason = " ".join(str(e).split()) or type(e).__name__
        raise VarbayesError(f"{bad} ({reason}); {fix}") from None
