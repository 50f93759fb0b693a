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

from varbayes.models.errors import VarbayesError

T = TypeVar("T")

#: Set by the CLI's ``--quiet``; progress bars are silent when True.
_QUIET = {"value": False}


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar made by :func:`progress`."""
    _QUIET["value"] = bool(quiet)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr, unless ``--quiet`` was given."""
    return iter(tqdm(iterable, desc=desc, total=total, disable=_QUIET["value"], leave=False))


def out_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed and return it; fail clearly if it is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VarbayesError(f"--out {p} exists and is not a directory: choose another path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VarbayesError(f"cannot create --out {p}: {e.strerror}") from None
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial file.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    """Write ``metrics.json`` (flat keys, SI units, log-likelihoods in nats) atomically."""
    text = json.dumps(_jsonable(metrics), indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(Path(out) / "metrics.json", text.encode())


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``metrics.json`` from a run folder, with a clear error when it is missing."""
    p = Path(run_dir) / "metrics.json"
    if not p.is_file():
        raise VarbayesError(f"no metrics.json in {run_dir}: pass a folder written by varbayes")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise VarbayesError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    p = Path(path)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return p


def save_inferencedata(idata: Any, path: str | os.PathLike[str]) -> Path:
    """Write InferenceData to netCDF atomically (temporary file, then ``os.replace``)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        idata.to_netcdf(tmp)
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return p


def load_inferencedata(path: str | os.PathLike[str]):
    """Read InferenceData from netCDF (data only: no code runs), with clear errors."""
    import arviz as az

    p = Path(path)
    if not p.is_file():
        raise VarbayesError(f"no InferenceData file at {p}: run 'varbayes mcmc' first")
    try:
        return az.from_netcdf(p)
    except Exception as e:  # netCDF/HDF5 raise many types for a bad file
        raise VarbayesError(f"{p} is not a readable InferenceData netCDF file ({e})") from None
