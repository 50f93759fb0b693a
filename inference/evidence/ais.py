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

from varbayes.inference.backends import check_backend
from varbayes.inference.evidence.annealing import (
    DEFAULTS,
    INITS,
    SCHEDULES,
    AISOptions,
    AISResult,
    check_options,
    schedule,
)
from varbayes.inference.ppl import checked_pair, isolated, to_batches

__all__ = ["DEFAULTS", "INITS", "SCHEDULES", "AISOptions", "AISResult", "ais", "check_options",
           "schedule"]


def ais(model: Callable[..., None], guide: Callable[..., None],
        batches: Iterable[tuple[tuple, dict]], options: AISOptions = DEFAULTS, *,
        backend: str = "numpyro", seed: int = 0, plate: str = "data",
        params: Mapping[str, Any] | None = None, posterior: Sequence[Any] | None = None,
        progress: Callable[[Iterable], Iterable] | None = None) -> AISResult:
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
    if backend == "pyro":
        from varbayes.inference.evidence.ais_pyro import pyro_ais as run
    else:
        from varbayes.inference.evidence.ais_jax import numpyro_ais as run
    batches = to_batches(batches, backend, "ais")
    with isolated(backend):
        model, guide, *_ = checked_pair(model, guide, *batches[0], backend=backend,
                                        params=params)
        return run(model, guide, batches, options, seed=seed, plate=plate,
                   posterior=posterior, progress=progress)
