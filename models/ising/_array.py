"""The few array operations the Ising math needs, for numpy, JAX and torch arrays alike.

Everything else in :mod:`.energy` is written with operators (``+``, ``*``,
slicing) that the three libraries share, so one function serves the numpy reference, the
JAX (NumPyro) model and the torch (Pyro) model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy.ndarray | jax.Array | torch.Tensor


def _is_torch(a: Array) -> bool:
    return type(a).__module__.startswith("torch")


def _is_jax(a: Array) -> bool:
    return type(a).__module__.startswith("jax")


def pad2(a: Array, top: int, bottom: int, left: int, right: int) -> Array:
    """Zero-pad the last two axes of ``a`` (shape ``(..., H, W)``)."""
    if _is_torch(a):
        from torch.nn import functional

        return functional.pad(a, (left, right, top, bottom))
    widths = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
    if _is_jax(a):
        import jax.numpy as jnp

        return jnp.pad(a, widths)
    return np.pad(a, widths)


def softplus(a: Array) -> Array:
    """``log(1 + exp(a))``, computed stably."""
    if _is_torch(a):
        from torch.nn import functional

        return functional.softplus(a)
    if _is_jax(a):
        import jax

        return jax.nn.softplus(a)
    return np.logaddexp(0.0, a)


def tanh(a: Array) -> Array:
    """Elementwise tanh in the array's own library."""
    if _is_torch(a):
        return a.tanh()
    if _is_jax(a):
        import jax.numpy as jnp

        return jnp.tanh(a)
    return np.tanh(a)


def sum2(a: Array) -> Array:
    """Sum over the last two axes: ``(..., H, W) -> (...)``."""
    return a.sum((-2, -1)) if _is_torch(a) else a.sum(axis=(-2, -1))
