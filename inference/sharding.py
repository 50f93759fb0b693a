"""Data parallelism over JAX devices: a 1-D mesh whose one axis splits the datapoints.

Arrays with a datapoint axis are split along axis 0 over the mesh (``NamedSharding`` with
``PartitionSpec("data")``); everything else (params, optimizer state, keys) is replicated.
A function ``jax.jit`` compiles on such inputs runs as one program on every device, and XLA
inserts the reductions (e.g. the all-reduce of a gradient summed over the datapoints), so
the result is the one-device result up to the order of floating-point sums.

Arrays are placed with ``jax.make_array_from_callback``: each process supplies its own
devices' pieces from the full host array, so the same code runs on one process or, after
``jax.distributed.initialize``, on several (each holding the full data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from varbayes.models.errors import VarbayesError, check

AXIS = "data"
"""The mesh axis that splits the datapoints."""


def check_devices(devices: int, flag: str = "--devices") -> int:
    """Return ``devices`` if JAX sees that many, else raise one line naming the fix."""
    import jax

    check(isinstance(devices, int) and devices >= 1, f"{flag} must be >= 1, got {devices!r}")
    seen = jax.devices()
    if devices > len(seen):
        platform = seen[0].platform
        fix = ("on a CPU, start it with XLA_FLAGS=--xla_force_host_platform_device_count="
               f"{devices} in the environment" if platform == "cpu" else
               "check CUDA_VISIBLE_DEVICES (or start jax.distributed on every host)")
        raise VarbayesError(f"{flag} {devices} but JAX sees {len(seen)} {platform} "
                            f"device(s): pass {flag} {len(seen)} or fewer, or {fix}")
    return devices


def check_divides(n: int, devices: int, what: str, flag: str = "--devices") -> None:
    """Refuse a datapoint count ``n`` that ``devices`` (or ranks) do not split evenly."""
    if n % devices:
        lo, hi = n - n % devices, n + devices - n % devices
        raise VarbayesError(f"{what} {n} does not divide by {flag} {devices}: use "
                            f"{lo if lo else hi} or {hi}")


def mesh(devices: int) -> Any:
    """A 1-D ``jax.sharding.Mesh`` over the first ``devices`` devices, axis ``"data"``."""
    import jax
    import numpy as np

    check_devices(devices)
    return jax.sharding.Mesh(np.array(jax.devices()[:devices]), (AXIS,))


def _place(a: Any, sharding: Any) -> Any:
    import jax
    import numpy as np

    if a is None:
        return None
    if jax.process_count() == 1:
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def shard_rows(arrays: Sequence[Any], mesh: Any) -> tuple[Any, ...]:
    """Each array split along axis 0 over ``mesh`` (its length must divide by the mesh
    size); None entries stay None."""
    import jax

    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
    return tuple(_place(a, sharding) for a in arrays)


def replicate(tree: Any, mesh: Any) -> Any:
    """Every leaf of ``tree`` copied to every device of ``mesh``."""
    import jax

    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.tree_util.tree_map(lambda a: _place(a, sharding), tree)
