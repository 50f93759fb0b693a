"""The two backends: their names, the check, array conversion and model-module look-up.

An algorithm that takes a model takes ``backend=`` (``"numpyro"`` or ``"pyro"``), checks it
with :func:`check_backend` and picks its implementation once, at its entry; the conversion
and the look-up here are the shared rest. :func:`model_module` loads a model family's
backend module by name, for the model families' workflows (the generic algorithms are handed
their model). Nothing here imports torch or JAX until a function that needs them runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from varbayes.models.errors import check

BACKENDS = ("numpyro", "pyro")
"""The backend names, NumPyro (JAX) first: the default everywhere."""


def check_backend(backend: str, flag: str = "backend") -> str:
    """Return ``backend`` unchanged, or raise a one-line error naming ``flag`` and the choices."""
    check(backend in BACKENDS, f"{flag} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def as_array(a: Any, backend: str, dtype: str | None = "float32") -> Any:
    """``a`` as a JAX array (numpyro) or a torch tensor (pyro) of ``dtype``; None stays None.

    ``dtype=None`` keeps the kind: floats take the backend's default float type (float32
    unless changed), integers and booleans stay what they are.
    """
    if a is None:
        return None
    a = np.asarray(a)
    if check_backend(backend) == "pyro":
        import torch

        if not a.flags.writeable:  # torch wants memory it may write to
            a = a.copy()
        if dtype is not None:
            return torch.as_tensor(a, dtype=getattr(torch, dtype))
        return torch.as_tensor(a, dtype=torch.get_default_dtype() if a.dtype.kind == "f"
                               else None)
    import jax.numpy as jnp

    return jnp.asarray(a, dtype=dtype)


def model_module(family: str, backend: str) -> ModuleType:
    """``varbayes.models.<family>.<backend>_model``, e.g. ``model_module("vae", "pyro")``.

    Both modules of a family expose the same names with the same signatures, so code that
    holds the module works in either backend.
    """
    return importlib.import_module(f"varbayes.models.{family}.{check_backend(backend)}_model")
