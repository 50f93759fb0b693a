"""One parallel CAVI sweep on a 1024×1024 grid, in site updates per nanosecond.

Routes, measured interleaved in one process, each a loop of many sweeps:

- ``jax``: :func:`varbayes.inference.ising.cavi.parallel_sweep` (``jnp.pad`` + four slices) inside a
  jitted ``lax.fori_loop``, float32;
- ``torch``: :func:`varbayes.inference.ising.cavi.torch_parallel_sweeps`, in-place shift-and-add and
  ``sigmoid_``, float32, with one intra-op thread and with torch's default (2 here): on a
  shared 2-core machine one thread is often faster, because every in-place op ends in a
  barrier that waits for a descheduled thread. ``torch_updates_per_ns`` is the faster of the
  two and the JSON names both;
- ``numpy``: :func:`varbayes.inference.ising.cavi.parallel_sweep` on numpy float32 arrays;
- ``jax_tanh_add``: ``μ ← tanh(μ + h)`` alone, the ceiling of any sweep.

Targets (issue 3): JAX ≥ 1.5 and torch ≥ 0.6 updates/ns.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks._timing import interleaved_medians


def run(quick: bool) -> dict[str, float]:
    """Updates per ns for each route and their ratios to the numpy sweep."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Spinning OpenMP workers (torch's default) steal the cores from XLA's threads that run
    # next, and halve the JAX rate in this interleaved run. This only takes effect if torch
    # was not imported yet; ``python -m benchmarks`` sets it before any benchmark runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import jax
    import jax.numpy as jnp
    import torch

    from varbayes.inference.ising.cavi import parallel_sweep, torch_parallel_sweeps
    from varbayes.models.ising.energy import Couplings

    n = 256 if quick else 1024
    sweeps = 10 if quick else 100
    numpy_sweeps = 2 if quick else 10
    J, damping = 1.0, 0.5
    rng = np.random.default_rng(0)
    h = rng.normal(size=(n, n)).astype(np.float32)
    mu0 = np.tanh(h)
    scalar = Couplings(np.float32(J), np.float32(J))

    @jax.jit
    def jax_loop(mu, h):
        return jax.lax.fori_loop(0, sweeps, lambda _, m: parallel_sweep(m, h, scalar, damping),
                                 mu)

    @jax.jit
    def jax_tanh_add(mu, h):
        return jax.lax.fori_loop(0, sweeps, lambda _, m: jnp.tanh(m + h), mu)

    mu_j, h_j = jnp.asarray(mu0), jnp.asarray(h)
    mu_t, h_t = torch.from_numpy(mu0.copy()), torch.from_numpy(h)

    def numpy_loop():
        m = mu0
        for _ in range(numpy_sweeps):
            m = parallel_sweep(m, h, scalar, damping)
        return m

    # the routes agree before they are timed
    ref = mu0
    for _ in range(3):
        ref = parallel_sweep(ref, h, scalar, damping)
    check_t = torch_parallel_sweeps(torch.from_numpy(mu0.copy()), h_t, J, damping, 3).numpy()
    check_j = np.asarray(jax.lax.fori_loop(
        0, 3, lambda _, m: parallel_sweep(m, h_j, scalar, damping), mu_j))
    assert np.abs(check_t - ref).max() < 1e-4 and np.abs(check_j - ref).max() < 1e-4

    default_threads = torch.get_num_threads()

    def torch_loop(threads: int):
        def call():
            torch.set_num_threads(threads)
            try:
                return torch_parallel_sweeps(mu_t, h_t, J, damping, sweeps)
            finally:
                torch.set_num_threads(default_threads)

        return call

    routes = {
        "jax": lambda: jax_loop(mu_j, h_j).block_until_ready(),
        "torch_1thread": torch_loop(1),
        "torch_default_threads": torch_loop(default_threads),
        "numpy": numpy_loop,
        "jax_tanh_add": lambda: jax_tanh_add(mu_j, h_j).block_until_ready(),
    }
    load_before = os.getloadavg()[0]
    seconds = interleaved_medians(routes, repeats=3 if quick else 7, warmup=1)
    load_after = os.getloadavg()[0]
    rate = {k: n * n * (numpy_sweeps if k == "numpy" else sweeps) / seconds[k] / 1e9
            for k in routes}
    rate["torch"] = max(rate["torch_1thread"], rate["torch_default_threads"])
    return {
        "grid_side": float(n),
        "jax_updates_per_ns": rate["jax"],
        "torch_updates_per_ns": rate["torch"],
        "numpy_updates_per_ns": rate["numpy"],
        "jax_tanh_add_updates_per_ns": rate["jax_tanh_add"],
        "torch_1thread_updates_per_ns": rate["torch_1thread"],
        "torch_default_threads_updates_per_ns": rate["torch_default_threads"],
        "torch_default_threads": float(default_threads),
        "jax_over_numpy": rate["jax"] / rate["numpy"],
        "torch_over_numpy": rate["torch"] / rate["numpy"],
        # other processes on a shared machine halve these rates: say how busy it was
        "omp_wait_policy_passive": float(os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "jax_target_met": float(rate["jax"] >= 1.5),
        "torch_target_met": float(rate["torch"] >= 0.6),
    }
