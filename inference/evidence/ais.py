"""Annealed importance sampling (AIS) and, from exact posterior samples, its reverse chain
(BDMC, Grosse et al. 2015), for any model+guide pair with per-datapoint continuous latents.

:func:`ais` is the entry point for both backends: it checks the options and runs the JAX
implementation (:mod:`~varbayes.inference.evidence.ais_jax`) for a NumPyro model or the
torch one (:mod:`~varbayes.inference.evidence.ais_pyro`) for a Pyro model; both share
:mod:`~varbayes.inference.evidence.annealing` (options, schedule, estimates). Forward AIS
gives a stochastic lower bound on log p(x_i) per datapoint, the reverse chain an upper
bound; the gap between them bounds the error of both. Nats throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from varbayes.inference import ranks
from varbayes.inference.backends import check_backend
from varbayes.inference.evidence import parallel
from varbayes.inference.evidence.annealing import (
    DEFAULTS,
    INITS,
    SCHEDULES,
    AISOptions,
    AISResult,
    check_options,
    schedule,
)
from varbayes.inference.ppl import checked_pair, isolated, pair_params, to_batches

__all__ = ["DEFAULTS", "INITS", "SCHEDULES", "AISOptions", "AISResult", "ais", "check_options",
           "schedule"]


def ais(model: Callable[..., None], guide: Callable[..., None],
        batches: Iterable[tuple[tuple, dict]], options: AISOptions = DEFAULTS, *,
        backend: str = "numpyro", seed: int = 0, plate: str = "data",
        params: Mapping[str, Any] | None = None, posterior: Sequence[Any] | None = None,
        progress: Callable[[Iterable], Iterable] | None = None, devices: int = 1
        ) -> AISResult:
    """AIS estimates of log p(x_i) (nats) for every datapoint of every batch.

    Parameters
    ----------
    model, guide : a NumPyro or Pyro model+guide pair (matching ``backend``) whose latents
        and observations sit under the plate ``plate``; the guide is the start density
        when ``options.init == "guide"``.
    batches : ``(args, kwargs)`` per batch of M datapoints, as for
        :func:`.importance.importance_sampling` (see
        :func:`.batches.batches`).
    options : :class:`AISOptions` (T, chains, schedule, start density, HMC settings).
    params : the trained values of the guide's (and model's) param sites, constrained
        (``fit(...).params``); None: the values the pair creates itself, in both backends.
    posterior : for BDMC, one (M, d) array per batch of exact posterior samples (the z that
        generated x, flattened in the order of
        :func:`.sites.flatten_latents`); the chains then run from
        β = 1 to 0 and ``log_px`` is a stochastic upper bound.
    progress : wraps the list of batches, e.g. in a progress bar.
    devices : NumPyro: JAX devices that split each batch's datapoints, with the same draws
        and results as one device (every batch but the last must divide by it; the last,
        short one runs on one device). A Pyro pair (``devices`` 1) in a ``torchrun``
        process group splits its datapoints over the torch ranks instead (each rank its
        own draws: the results match one process statistically); every rank returns all
        of them, in order.

    Returns
    -------
    AISResult
        ``log_px`` (N,), its standard error over chains, the per-chain log weights (C, N)
        and the mean acceptance per transition.

    Raises
    ------
    VarbayesError
        One line, for bad options, a pair of the other backend or a model outside the
        contract.
    """
    check_backend(backend)
    on_jax = backend == "numpyro"
    devices = parallel.resolve_devices(devices, on_jax, plate)
    batches = to_batches(batches, backend, "ais")
    with isolated(backend):
        pair = checked_pair(model, guide, *batches[0], backend=backend, params=params)
        if on_jax:  # the params enter the compiled function as arguments (compiled once)
            from varbayes.inference.evidence.ais_jax import numpyro_ais

            values = pair_params(params, pair, backend)
            return numpyro_ais(model, guide, batches, options, seed=seed, plate=plate,
                               posterior=posterior, progress=progress, devices=devices,
                               params=values)
        model, guide = pair.model, pair.guide
        from varbayes.inference.evidence.ais_pyro import pyro_ais

        if not parallel.split_ranks(plate):
            return pyro_ais(model, guide, batches, options, seed=seed, plate=plate,
                            posterior=posterior, progress=progress)
        return _ranked(pyro_ais, model, guide, batches, options, seed=seed, plate=plate,
                       posterior=posterior, progress=progress)


def _ranked(run: Callable[..., AISResult], model: Callable[..., None],
            guide: Callable[..., None], batches: list[tuple[tuple, dict]],
            options: AISOptions, *, seed: int, plate: str, posterior: Sequence[Any] | None,
            progress: Callable[[Iterable], Iterable] | None) -> AISResult:
    """``run`` (:func:`.ais_pyro.pyro_ais`) on this torch rank's block of every batch, with
    this rank's seed; the per-datapoint results of all ranks gathered in the original order,
    the acceptance averaged over all datapoints."""
    import time

    import numpy as np
    import torch

    t0 = time.perf_counter()
    sizes = [parallel.batch_rows(b) for b in batches]
    blocks = [parallel.rank_block(m) for m in sizes]
    keep = [i for i, s in enumerate(blocks) if s.stop > s.start]
    mine = [parallel.local_batch(batches[i]) for i in keep]
    post = None if posterior is None else [posterior[i][blocks[i]] for i in keep]
    n = sum(blocks[i].stop - blocks[i].start for i in keep)
    if mine:
        res = run(model, guide, mine, options, seed=parallel.rank_seed(seed), plate=plate,
                  posterior=post, progress=progress)
    else:
        zero = np.zeros(0)
        res = AISResult(zero, zero, np.zeros((options.chains, 0)),
                        np.zeros(options.n_steps - 1), 0.0)
    cols = parallel.gather_points(np.column_stack([res.log_px, res.stderr, res.log_w.T]),
                                  sizes)  # (N, 2 + C)
    accept = ranks.all_sum(torch.as_tensor(res.accept * n, dtype=torch.float64)).numpy()
    return AISResult(cols[:, 0], cols[:, 1], cols[:, 2:].T.copy(), accept / sum(sizes),
                     ranks.all_max(time.perf_counter() - t0))
