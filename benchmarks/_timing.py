"""Interleaved timing: the only fair way to compare routes on a noisy 2-core machine."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(
    routes: Mapping[str, Callable[[], object]], *, repeats: int = 7, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each route, running the routes round-robin.

    Parameters
    ----------
    routes : name -> zero-argument callable. Each call must block until its work is done
        (call ``.block_until_ready()`` on JAX results inside the callable).
    repeats : timed rounds; each round calls every route once, in order.
    warmup : untimed rounds first (compilation, caches).
    """
    for _ in range(warmup):
        for fn in routes.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(repeats):
        for name, fn in routes.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
