"""Draws of a model's latents as one arviz InferenceData, the same in both backends.

Given draws of the latent sites (from NUTS, or from a fitted guide), :func:`pointwise` replays
the model at each draw and returns, for the *observed* sites only (never a latent, never a
``factor``):

- ``log_likelihood``: the pointwise log p(y_i | draw) in nats, one value per plate element,
  for PSIS-LOO / WAIC;
- ``posterior_predictive``: a fresh y drawn at each draw (the observed sites unconditioned);

and :func:`prior_draws` samples the whole model for the ``prior`` and ``prior_predictive``
groups. :func:`to_inferencedata` names every dimension the same way in both backends: a
plate's name where a plate stands (``data`` for ``plate("data", N)``), else
``<site>_dim_<i>``, with a user's ``coords`` / ``dims`` passed through.

:func:`guide_draws` is the SVI side: independent draws of a fitted guide (``params=``, the
constrained values of ``fit(...).params``) with the same groups as :func:`~varbayes.inference.
mcmc.nuts.nuts`, plus each draw's importance log weight log p(y, θ) − log q(θ) in
``sample_stats.log_weight`` for the PSIS k̂ of q (:func:`.diagnostics.q_khat`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.inference.ppl import (
    Site,
    checked_pair,
    dims_of,
    isolated,
    latent,
    observed,
    to_backend,
    to_numpy,
    uncondition,
)
from varbayes.models.errors import check

Draws = dict[str, np.ndarray]
"""Site name -> numpy array (chain, draw, *site_shape)."""


def _flat(draws: Draws) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    lead = next(iter(draws.values())).shape[:2]
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}, lead


def _unflat(values: Mapping[str, np.ndarray], lead: tuple[int, ...]) -> Draws:
    return {k: np.asarray(v).reshape(*lead, *np.shape(v)[1:]) for k, v in values.items()}


# ------------------------------------------------------------------------- NumPyro

def _numpyro_pointwise(model: Callable[..., Any], draws: Draws, names: Sequence[str],
                       args: tuple, kwargs: dict, seed: int, predictive: bool,
                       chunk: int = 256) -> tuple[Draws, Draws]:
    import jax
    from numpyro import handlers

    flat, lead = _flat(draws)

    def one(draw: dict, key: Any) -> tuple[dict, dict]:
        tr = handlers.trace(handlers.substitute(handlers.seed(model, key), data=draw)
                            ).get_trace(*args, **kwargs)
        ll = {n: tr[n]["fn"].log_prob(tr[n]["value"]) for n in names}
        if not predictive:
            return ll, {}
        pp = handlers.trace(handlers.seed(handlers.substitute(
            uncondition(model, backend="numpyro"), data=draw), key)).get_trace(*args, **kwargs)
        return ll, {n: pp[n]["value"] for n in names}

    run = jax.jit(jax.vmap(one))
    n = len(next(iter(flat.values())))
    keys = jax.random.split(jax.random.key(seed), n)
    parts = [run({k: v[i:i + chunk] for k, v in flat.items()}, keys[i:i + chunk])
             for i in range(0, n, chunk)]
    ll = {k: np.concatenate([np.asarray(p[0][k], np.float64) for p in parts]) for k in names}
    pp = {k: np.concatenate([np.asarray(p[1][k]) for p in parts]) for k in parts[0][1]}
    return _unflat(ll, lead), _unflat(pp, lead)


def _numpyro_prior(model: Callable[..., Any], num_samples: int, args: tuple, kwargs: dict,
                   seed: int) -> Draws:
    import jax
    from numpyro import handlers

    def one(key: Any) -> dict:
        tr = handlers.trace(handlers.seed(uncondition(model, backend="numpyro"), key)
                            ).get_trace(*args, **kwargs)
        return {n: s["value"] for n, s in tr.items()
                if s["type"] == "sample" and type(s["fn"]).__name__ != "Unit"
                and getattr(s["fn"], "support", None) is not None}

    out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), num_samples))
    return {k: np.asarray(v)[None] for k, v in out.items()}


def _numpyro_guide(model: Callable[..., Any], guide: Callable[..., Any], latents: Sequence[str],
                   shape: tuple[int, int], args: tuple, kwargs: dict, seed: int
                   ) -> tuple[Draws, np.ndarray]:
    """(latent draws of the guide, log p(y, θ) − log q(θ) per draw), NumPyro."""
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_density

    def one(key: Any) -> tuple[dict, Any]:
        gtr = handlers.trace(handlers.seed(guide, key)).get_trace(*args, **kwargs)
        draw = {n: gtr[n]["value"] for n in latents}
        log_q, _ = log_density(guide, args, kwargs, {n: s["value"] for n, s in gtr.items()
                                                      if s["type"] == "sample"})
        log_p, _ = log_density(model, args, kwargs, draw)
        return draw, log_p - log_q

    draws, log_w = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed),
                                                           shape[0] * shape[1]))
    return _unflat(draws, shape), np.asarray(log_w, np.float64).reshape(shape)


# ---------------------------------------------------------------------------- Pyro

def _pyro_pointwise(model: Callable[..., Any], draws: Draws, names: Sequence[str],
                    args: tuple, kwargs: dict, seed: int, predictive: bool
                    ) -> tuple[Draws, Draws]:
    """Replays the model at each draw (Pyro's vectorized trace cannot broadcast
    vector-valued latents under a plate)."""
    import pyro
    import torch
    from pyro import poutine

    flat, lead = _flat(draws)
    n = len(next(iter(flat.values())))
    values = {k: torch.as_tensor(v, dtype=torch.get_default_dtype()) for k, v in flat.items()}
    ll: dict[str, list] = {k: [] for k in names}
    pp: dict[str, list] = {k: [] for k in names} if predictive else {}
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        for i in range(n):
            draw = {k: v[i] for k, v in values.items()}
            tr = poutine.trace(poutine.condition(model, data=draw)).get_trace(*args, **kwargs)
            for k in names:
                ll[k].append(to_numpy(tr.nodes[k]["fn"].log_prob(tr.nodes[k]["value"])))
            if predictive:
                tp = poutine.trace(poutine.condition(uncondition(model, backend="pyro"),
                                                     data=draw)).get_trace(*args, **kwargs)
                for k in names:
                    pp[k].append(to_numpy(tp.nodes[k]["value"]))
    return (_unflat({k: np.stack(v).astype(np.float64) for k, v in ll.items()}, lead),
            _unflat({k: np.stack(v) for k, v in pp.items()}, lead))


def _pyro_prior(model: Callable[..., Any], num_samples: int, args: tuple, kwargs: dict,
                seed: int) -> Draws:
    import pyro
    import torch
    from pyro import poutine

    pyro.set_rng_seed(seed)
    out: dict[str, list] = {}
    with torch.no_grad():
        for _ in range(num_samples):
            tr = poutine.trace(uncondition(model, backend="pyro")).get_trace(*args, **kwargs)
            for n, s in tr.nodes.items():
                if (s["type"] == "sample" and type(s["fn"]).__name__ != "Unit"
                        and getattr(s["fn"], "support", None) is not None
                        and not (s.get("infer") or {}).get("_deterministic")):
                    out.setdefault(n, []).append(to_numpy(s["value"]))
    return {k: np.stack(v)[None] for k, v in out.items()}


def _pyro_guide(model: Callable[..., Any], guide: Callable[..., Any], latents: Sequence[str],
                shape: tuple[int, int], args: tuple, kwargs: dict, seed: int
                ) -> tuple[Draws, np.ndarray]:
    import pyro
    import torch
    from pyro import poutine

    pyro.set_rng_seed(seed)
    out: dict[str, list] = {n: [] for n in latents}
    log_w = []
    with torch.no_grad():
        for _ in range(shape[0] * shape[1]):
            gtr = poutine.trace(guide).get_trace(*args, **kwargs)
            mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(*args, **kwargs)
            log_w.append(float(mtr.log_prob_sum()) - float(gtr.log_prob_sum()))
            for n in latents:
                out[n].append(to_numpy(gtr.nodes[n]["value"]))
    return (_unflat({k: np.stack(v) for k, v in out.items()}, shape),
            np.asarray(log_w, np.float64).reshape(shape))


IMPLEMENTATIONS = {
    "numpyro": (_numpyro_pointwise, _numpyro_prior, _numpyro_guide),
    "pyro": (_pyro_pointwise, _pyro_prior, _pyro_guide),
}
"""Backend -> (pointwise, prior, guide draws); picked once by each entry."""


# ------------------------------------------------------------------------- assembling

def to_inferencedata(sites: Sequence[Site], posterior: Draws, *,
                     sample_stats: Mapping[str, np.ndarray] | None = None,
                     log_likelihood: Draws | None = None,
                     posterior_predictive: Draws | None = None, prior: Draws | None = None,
                     coords: Mapping[str, Any] | None = None,
                     dims: Mapping[str, Sequence[str]] | None = None):
    """arviz InferenceData with the groups ``posterior``, ``sample_stats``,
    ``log_likelihood``, ``observed_data``, ``posterior_predictive``, ``prior`` and
    ``prior_predictive`` (those given), dimensions named by :func:`.ppl.dims_of`.

    ``sites`` is one trace of the model (its observed sites give ``observed_data`` and split
    ``prior`` into ``prior`` and ``prior_predictive``).
    """
    import arviz as az

    obs = {s.name: to_numpy(s.value) for s in observed(sites)}
    kw: dict[str, Any] = {"posterior": posterior}
    if sample_stats:
        kw["sample_stats"] = dict(sample_stats)
    if log_likelihood:
        kw["log_likelihood"] = log_likelihood
    if obs:
        kw["observed_data"] = obs
    if posterior_predictive:
        kw["posterior_predictive"] = posterior_predictive
    if prior:
        kw["prior"] = {k: v for k, v in prior.items() if k not in obs}
        kw["prior_predictive"] = {k: v for k, v in prior.items() if k in obs} or None
    names = {n for group in kw.values() if isinstance(group, dict) for n in group}
    all_dims = dims_of(sites, dims)
    return az.from_dict(**kw, coords=dict(coords or {}),
                        dims={k: v for k, v in all_dims.items() if k in names})


def pointwise_groups(model: Callable[..., Any], sites: Sequence[Site], draws: Draws,
                     args: tuple, kwargs: dict, *, impl: tuple, seed: int, predictive: bool,
                     prior_samples: int) -> dict[str, Draws]:
    """``log_likelihood``, ``posterior_predictive`` and ``prior`` (latent and observed)
    draws for :func:`to_inferencedata`, with the implementation ``impl`` of one backend."""
    pointwise, prior_fn, _ = impl
    names = [s.name for s in observed(sites)]
    out: dict[str, Draws] = {}
    if names:
        out["log_likelihood"], pp = pointwise(model, draws, names, args, kwargs, seed + 1,
                                              predictive)
        if predictive:
            out["posterior_predictive"] = pp
    if predictive and prior_samples > 0:
        out["prior"] = prior_fn(model, prior_samples, args, kwargs, seed + 2)
    return out


def guide_draws(model: Callable[..., Any], guide: Callable[..., Any], *args: Any,
                backend: str = "numpyro", params: Mapping[str, Any] | None = None,
                num_chains: int = 4, num_samples: int = 500, seed: int = 0,
                predictive: bool = True, prior_samples: int | None = None,
                coords: Mapping[str, Any] | None = None,
                dims: Mapping[str, Sequence[str]] | None = None, **kwargs: Any):
    """Independent draws of a fitted guide q(θ) as InferenceData, like :func:`nuts`'s.

    Parameters
    ----------
    model, guide : a NumPyro or Pyro pair (matching ``backend``), called with ``(*args,
        **kwargs)``; numpy arrays are converted.
    params : the guide's (and model's) param values in their constrained space, e.g.
        ``fit(...).params``; None uses the values the pair creates itself (their initial
        values, in both backends: Pyro's global param store is not read).
    num_chains, num_samples : the draws are arranged (chain, draw) so that r̂ and ESS are
        defined; they are independent, so those say nothing about how good q is: use the
        PSIS k̂ of :func:`.diagnostics.q_khat` on the result.
    predictive : also draw ``posterior_predictive``, ``prior`` and ``prior_predictive``.
    prior_samples : prior draws (default ``num_samples``).
    coords, dims : passed to arviz; ``dims`` entries replace the inferred dimension names.

    Returns
    -------
    arviz.InferenceData with ``posterior`` (the model's latent sites), ``log_likelihood``,
    ``observed_data``, ``sample_stats.log_weight`` (log p(y, θ) − log q(θ), nats) and, with
    ``predictive``, the predictive groups.
    """
    impl = IMPLEMENTATIONS[check_backend(backend)]
    check(int(num_chains) >= 1, f"num_chains must be >= 1, got {num_chains}")
    check(int(num_samples) >= 1, f"num_samples must be >= 1, got {num_samples}")
    args, kwargs = to_backend(tuple(args), backend), to_backend(dict(kwargs), backend)
    with isolated(backend):
        model, guide, msites, gsites = checked_pair(model, guide, args, kwargs,
                                                    backend=backend, params=params)
        names = [s.name for s in latent(msites)]
        missing = sorted(set(names) - {s.name for s in gsites if s.type == "sample"})
        check(not missing, f"the guide has no sample site for the model's latent(s) "
                           f"{missing}: a guide must draw every latent site of the model")
        draws, log_w = impl[2](model, guide, names, (int(num_chains), int(num_samples)), args,
                               kwargs, seed)
        groups = pointwise_groups(model, msites, draws, args, kwargs, impl=impl, seed=seed,
                                  predictive=predictive,
                                  prior_samples=int(num_samples if prior_samples is None
                                                    else prior_samples))
    return to_inferencedata(msites, draws, sample_stats={"log_weight": log_w}, **groups,
                            coords=coords, dims=dims)
