"""The checkpoint file of :func:`.svi.fit`: one ``.npz`` of plain arrays
plus a JSON header stored as a byte array.

Checkpoints are written atomically (a reader sees the old file or the complete new one) and
read with ``allow_pickle=False``, so loading one never executes code. The header holds the
format tag, the backend, the training options a resumed run must repeat, the caller's
``meta`` (e.g. the model configuration), the epochs done and the history; the arrays hold the
parameters, the optimizer state and the caller's exported arrays (``export/<name>``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from varbayes.inference.data.files import READ_ERRORS
from varbayes.inference.io import atomic_write_bytes
from varbayes.models.errors import VarbayesError, check

FORMAT = "varbayes-svi-1"


def options_header(options: Any) -> dict[str, Any]:
    """The training options a resumed run must repeat (an ``SVIOptions`` or
    ``MCEMOptions``, as a dict)."""
    d = options._asdict()
    for key in ("epochs", "eval_batch_size", "time_limit",
                "compiler",  # rounding only; see SVIOptions.compiler
                "devices"):  # the same run on any number of devices (up to rounding)
        d.pop(key, None)
    if d["backend"] == "numpyro":
        d.pop("jit", None)
    return d


def save_checkpoint(path: str | Path, arrays: Mapping[str, np.ndarray],
                    header: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the JSON ``header`` to one ``.npz``, atomically."""
    buf = io.BytesIO()
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["header"] = np.frombuffer(json.dumps(dict(header)).encode(), dtype=np.uint8)
    np.savez(buf, **payload)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles anything.

    Raises :class:`VarbayesError` when the file is missing, truncated or not ours.
    """
    p = Path(path)
    check(p.is_file(), f"no checkpoint at {p}: pass a run folder written by 'varbayes vae train'")
    try:
        f = np.load(p, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("one .npy array, not an .npz archive")
        with f:
            header = json.loads(f["header"].tobytes().decode())
            arrays = {k[2:]: f[k] for k in f.files if k.startswith("a/")}
    except (*READ_ERRORS, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise VarbayesError(f"checkpoint {p} is corrupt or not a varbayes checkpoint "
                            f"({type(e).__name__}): delete it or train again") from None
    check(isinstance(header, dict) and header.get("format") == FORMAT,
          f"checkpoint {p} is not a varbayes SVI checkpoint (format "
          f"{header.get('format') if isinstance(header, dict) else None!r})")
    return arrays, header


def check_compatible(header: Mapping[str, Any], options: Any,
                     meta: Mapping[str, Any], path: str | Path) -> None:
    """Raise :class:`VarbayesError` unless a checkpoint header matches this run."""
    check(header["backend"] == options.backend,
          f"checkpoint {path} was written by the {header['backend']} backend but this run uses "
          f"{options.backend}: pass --backend {header['backend']} or a new --out")
    ours = options_header(options)
    # an option added after the checkpoint was written had its default value then
    theirs = {**getattr(type(options), "_field_defaults", {}), **header["options"]}
    diff = sorted(k for k in ours if theirs.get(k) != ours[k])
    check(not diff, f"checkpoint {path} was trained with other options ("
          + ", ".join(f"{k}={theirs.get(k)!r} not {ours[k]!r}" for k in diff)
          + "): use the original options or a new --out")
    saved = header.get("meta", {})
    diff = sorted(k for k in set(saved) | set(meta) if saved.get(k) != meta.get(k))
    check(not diff, f"checkpoint {path} belongs to another configuration (differs in "
                    f"{', '.join(diff)}): use the original configuration or a new --out")


def flatten_state(obj: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON skeleton of a torch optimizer state; tensors go to ``arrays`` under ``key``."""
    import torch

    if isinstance(obj, torch.Tensor):
        arrays[key] = obj.detach().cpu().numpy().copy()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {"__dict__": [[k, flatten_state(v, f"{key}/{k}", arrays)]
                             for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        items = [flatten_state(v, f"{key}/{i}", arrays) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    check(obj is None or isinstance(obj, bool | int | float | str),
          f"cannot checkpoint optimizer state value of type {type(obj).__name__}")
    return obj


def unflatten_state(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`flatten_state`: the skeleton with its tensors read from ``arrays``."""
    import torch

    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return torch.from_numpy(np.array(arrays[obj["__tensor__"]]))
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, arrays) for v in obj["__tuple__"])
        return {k: unflatten_state(v, arrays) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten_state(v, arrays) for v in obj]
    return obj


def make_header(options: Any, meta: Mapping[str, Any], epoch: int,
                history: Mapping[str, list[float]], **extra: Any) -> dict[str, Any]:
    """The JSON header of a checkpoint after ``epoch`` epochs (``extra``: backend state)."""
    return {"format": FORMAT, "backend": options.backend, "options": options_header(options),
            "meta": dict(meta), "epoch": epoch, "history": dict(history), **extra}
