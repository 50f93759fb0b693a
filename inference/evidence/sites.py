"""Per-datapoint log densities read off a model's trace, shared by every evidence estimator.

The model and guide put each datapoint's latents and observations under one plate
(``plate``, default ``"data"``) of M datapoints. The functions here walk a trace (NumPyro's
dict of sites or Pyro's ``trace.nodes``: both have ``type``, ``fn``, ``value``,
``is_observed`` and ``cond_indep_stack``), check that the model fits that contract, and sum
each site's log-density to one value per datapoint (nats):

- :func:`site_terms`: Σ of every site's per-datapoint terms (a ``factor`` outside the plate,
  a term on the parameters, is left out; a latent outside the plate is refused);
- :func:`latent_sites` and :func:`split_terms`: the latents' shapes, and the latent terms
  apart from the rest (AIS and the appendix-D estimator);
- :func:`pyro_particle_plate`: Pyro draws vectorized by an outer ``_particles`` plate;
- :func:`numpyro_log_joint`: ``z -> log p(x_i, z_i)`` for quadrature and grids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from varbayes.inference.ppl import to_backend, with_params
from varbayes.models.errors import VarbayesError, check


def numpyro_reduce(lp: Any, plate_dim: int | None) -> Any:
    """A NumPyro site's log-density summed to (M,) per datapoint of the plate at ``plate_dim``
    (the ``reduce`` of :func:`site_terms` and :func:`split_terms` for JAX arrays); with
    ``plate_dim`` None (no data plate: the whole data set is one point) summed to (1,)."""
    import jax.numpy as jnp

    if plate_dim is None:
        return jnp.sum(lp).reshape(1)
    lp = jnp.moveaxis(lp, plate_dim, -1)
    return lp.reshape(-1, lp.shape[-1]).sum(0)


def _outside(kind: str, name: str, plate: str, site: dict) -> VarbayesError:
    """The error for a site outside the data plate, naming the plates it does sit in."""
    frames = sorted((f for f in site["cond_indep_stack"] if f.name != "_particles"),
                    key=lambda f: f.dim)  # outermost (leftmost) first, in both backends
    seen = [f.name for f in frames]
    if not seen and kind == "latent":  # a global latent: the whole data set is one point
        return VarbayesError(
            f"latent site '{name}' is in no plate, so p(x_i) does not factorize over a "
            f"'{plate}' plate: pass plate=None to treat the whole data set as one datapoint "
            "(log p(y) of all of it), or make the latent per-datapoint")
    where = f"its plates: {seen}" if seen else "it is in no plate"
    fix = (f"pass plate={seen[0]!r} (the name of the model's data plate)" if seen else
           "put the data in a plate named 'data'")
    return VarbayesError(f"{kind} site '{name}' is outside the '{plate}' plate ({where}): "
                         f"{fix}; these estimators need per-datapoint latents and data, or "
                         "plate=None for a model whose latents are all global (the whole "
                         "data set is then one datapoint)")


def site_terms(sites: Iterable[dict], plate: str | None,
               reduce: Callable[[Any, int | None], Any], latent_only: bool = False) -> Any:
    """Σ over sample sites of per-datapoint log densities, each reduced to (..., M) by
    ``reduce(log_prob, plate_dim)``; checks that latents are local and continuous. With
    ``plate`` None every site counts whole (``plate_dim`` None): one value for all data."""
    total = 0.0
    for site in sites:
        if (site["type"] != "sample" or site["name"] == "_particles"
                or (site.get("infer") or {}).get("_deterministic")):
            continue
        fn, observed = site["fn"], site["is_observed"]
        if latent_only and observed:
            continue
        support = getattr(fn, "support", None)
        if support is None:  # Pyro's subsample site of a plate
            continue
        if not observed and getattr(support, "is_discrete", False):
            raise VarbayesError(f"site '{site['name']}' is a discrete latent: these estimators "
                                "need continuous per-datapoint latents")
        if plate is None:
            total = total + reduce(fn.log_prob(site["value"]), None)
            continue
        frames = [f for f in site["cond_indep_stack"] if f.name == plate]
        if not frames:
            if observed and type(fn).__name__ == "Unit":
                continue  # a factor: a term on the parameters, not on x
            raise _outside("observed" if observed else "latent", site["name"], plate, site)
        total = total + reduce(fn.log_prob(site["value"]), frames[0].dim)
    return total


def is_real(support: Any) -> bool:
    """True for ``real`` or ``real_vector`` supports (both backends' constraint objects)."""
    base = getattr(support, "base_constraint", support)
    return type(base).__name__ == "_Real"


def latent_sites(sites: Iterable[dict], plate: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-datapoint shape) of each latent site; refuses latents that are discrete,
    outside ``plate``, constrained, or without the plate as their leftmost dimension."""
    out = []
    for s in sites:
        if (s["type"] != "sample" or s["is_observed"] or s["name"] == "_particles"
                or (s.get("infer") or {}).get("_deterministic")):
            continue
        fn = s["fn"]
        support = getattr(fn, "support", None)
        if support is None:
            continue
        name = s["name"]
        if getattr(support, "is_discrete", False):
            raise VarbayesError(f"site '{name}' is a discrete latent: AIS needs continuous "
                                "per-datapoint latents")
        frames = [f for f in s["cond_indep_stack"] if f.name == plate]
        if not frames:
            raise _outside("latent", name, plate, s)
        if not is_real(support):
            raise VarbayesError(f"latent site '{name}' has support {support}: AIS here needs "
                                "unconstrained real latents")
        shape = tuple(s["value"].shape)
        if len(shape) + frames[0].dim - len(fn.event_shape) != 0:
            raise VarbayesError(f"latent site '{name}' must have the '{plate}' plate as its "
                                f"leftmost dimension, got shape {shape}")
        out.append((name, shape[1:]))
    check(bool(out), "the model has no latent sample site: nothing to integrate")
    return out


def split_terms(sites: Iterable[dict], plate: str, latents: Sequence[str],
                reduce: Callable[[Any, int], Any]) -> tuple[Any, Any]:
    """(Σ latent terms, Σ other terms) per datapoint, each reduced by ``reduce(log_prob,
    plate_dim)``; ``factor`` sites outside the plate (terms on parameters) are left out."""
    prior, rest = 0.0, 0.0
    for s in sites:
        if (s["type"] != "sample" or s["name"] == "_particles"
                or (s.get("infer") or {}).get("_deterministic")):
            continue
        if getattr(s["fn"], "support", None) is None:
            continue
        frames = [f for f in s["cond_indep_stack"] if f.name == plate]
        if not frames:
            if type(s["fn"]).__name__ == "Unit":
                continue
            raise _outside("observed" if s["is_observed"] else "latent", s["name"], plate, s)
        term = reduce(s["fn"].log_prob(s["value"]), frames[0].dim)
        if s["name"] in latents:
            prior = prior + term
        else:
            rest = rest + term
    return prior, rest


def pyro_particle_plate(sites: Iterable[dict], n: int
                        ) -> tuple[Callable[[Callable[..., None]], Callable[..., None]],
                                   Callable[[Any, int], Any]]:
    """Vectorize a Pyro model over ``n`` particles with an outer plate ``_particles`` placed
    left of every plate among ``sites`` (a trace's nodes). Returns ``(vec, reduce)``:
    ``vec(fn)`` wraps a model or guide, and ``reduce(log_prob, plate_dim)`` turns a site's
    log-density into (n, M) per particle and datapoint, for :func:`site_terms`."""
    import pyro
    import torch

    nesting = max([-f.dim for s in sites if s["type"] == "sample"
                   for f in s["cond_indep_stack"]] or [0])
    dim = -(nesting + 1)

    def vec(fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*a: Any, **kw: Any) -> None:
            with pyro.plate("_particles", n, dim=dim):
                fn(*a, **kw)
        return wrapped

    def reduce(lp: Any, plate_dim: int | None) -> Any:
        while lp.dim() < -dim:
            lp = lp.unsqueeze(0)
        if plate_dim is None:  # no data plate: everything but the particles, (n, 1)
            lp = torch.movedim(lp, dim, 0)
            return lp.expand(n, *lp.shape[1:]).reshape(n, -1).sum(1, keepdim=True)
        lp = torch.movedim(torch.movedim(lp, plate_dim, -1), dim, 0)
        return lp.expand(n, *lp.shape[1:]).reshape(n, -1, lp.shape[-1]).sum(1)

    return vec, reduce


def numpyro_log_joint(model: Callable[..., None], site: str, *args: Any,
                      plate: str = "data", params: dict[str, Any] | None = None,
                      **kwargs: Any) -> Callable[[Any], Any]:
    """``z (M, K) -> (M,)`` per-datapoint log p(x_i, z_i) with the latent ``site`` set to z.

    ``params``: values of the model's param sites (constrained, e.g. ``fit(...).params``);
    None: the values the model creates itself. numpy arguments are converted.
    """
    from numpyro import handlers

    model = with_params(model, params, backend="numpyro")
    args, kwargs = to_backend(args, "numpyro"), to_backend(kwargs, "numpyro")

    def log_joint(z: Any) -> Any:
        m = handlers.substitute(handlers.seed(model, 0), data={site: z})
        return site_terms(handlers.trace(m).get_trace(*args, **kwargs).values(), plate,
                          numpyro_reduce)

    return log_joint


def flatten(values: dict[str, Any], sites: Sequence[tuple[str, tuple[int, ...]]], lead: int
            ) -> Any:
    """name -> (lead..., *shape) latents as one (lead..., d) JAX array, in ``sites`` order."""
    import jax.numpy as jnp

    return jnp.concatenate([values[n].reshape(*values[n].shape[:lead], -1) for n, _ in sites],
                           -1)


def unflatten(z: Any, sites: Sequence[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """Inverse of :func:`flatten`: (..., d) -> name -> (..., *shape), for JAX or torch."""
    out, i = {}, 0
    for name, shape in sites:
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = z[..., i:i + n].reshape(*z.shape[:-1], *shape)
        i += n
    return out


def flatten_latents(model: Callable[..., None], args: tuple, kwargs: dict,
                    values: dict[str, Any], plate: str = "data") -> Any:
    """The per-datapoint latents ``values`` (name -> (M, ...)) as one (M, d) array in the
    order AIS uses (for BDMC's exact posterior samples)."""
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    return flatten(values, latent_sites(tr.values(), plate), 1)
