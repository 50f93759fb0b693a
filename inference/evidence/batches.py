"""Batches of datapoints in the form every evidence estimator takes: ``(args, kwargs)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from varbayes.inference.backends import as_array
from varbayes.models.errors import check

Batch = tuple[tuple[Any, ...], dict[str, Any]]
"""``(args, kwargs)`` of one batch of datapoints, passed to the model and the guide."""


def batches(arrays: Sequence[Any], batch_size: int, *, backend: str = "numpyro",
            static: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> list[Batch]:
    """Split per-datapoint arrays (N, ...) into batches of ``batch_size`` for ``backend``.

    Each batch is ``((*static, *slices), kwargs)``: ``static`` leads every call unchanged
    (e.g. the network a model closes over), each array is sliced along axis 0 and converted
    to float32 JAX arrays or torch tensors; None entries stay None.
    """
    sizes = {len(a) for a in arrays if a is not None}
    check(len(sizes) == 1, f"batch arrays must share their first dimension, got sizes "
                           f"{sorted(sizes)}")
    n = sizes.pop()
    return [((*static, *(None if a is None else as_array(a[i:i + batch_size], backend)
                         for a in arrays)), dict(kwargs or {}))
            for i in range(0, n, batch_size)]
