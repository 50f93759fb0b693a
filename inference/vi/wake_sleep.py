"""Wake-sleep objectives for any model+guide with per-datapoint latents: wake-sleep and RWS.

Unlike the ELBO, the model's θ and the guide's φ follow two different objectives:

- **wake θ**: θ ascends log p_θ(x, z) with z ~ q_φ(z|x) held fixed. With K draws per
  datapoint the terms are weighted by w̃_k = softmax_k(log p_θ(x, z_k) − log q_φ(z_k|x)),
  the gradient of the K-sample bound L_K in θ (Bornschein & Bengio 2015); K = 1 is the
  wake phase of Hinton, Dayan, Frey & Neal (1995).
- **φ**, for ``wake-sleep``: the **sleep** phase. φ ascends log q_φ(z|x) on fantasies
  (z, x) ~ p_θ, one per datapoint of the minibatch (with its other arguments, e.g. a class).
- **φ**, for ``rws``: the **wake-φ** update of reweighted wake-sleep, φ ascends
  Σ_k w̃_k log q_φ(z_k|x) with the z_k held fixed (needs K ≥ 2: with one draw it has
  no signal).

Neither is the gradient of one objective, so a single loss carries both: its gradient in θ
is wake θ's and in φ the chosen φ update (both with the data plate's scale N/M), and its
value is the K-sample bound L_K (nats; the ELBO's estimate for K = 1), which the history
records. No latent needs a reparameterized sampler.

The sleep phase draws the model with its observed sites released (the prior predictive),
then runs the guide on the drawn x in place of the data: every observed site must take its
value from an argument of the model (``obs=x``), which the guide receives too.

Pyro's ``ReweightedWakeSleep`` weights the whole minibatch's joint density as one sample
and needs the guide to take an ``observations=`` keyword; these weight each datapoint and
work on any pair ``fit`` trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from varbayes.inference.ppl import uncondition
from varbayes.inference.vi.iwae import (
    _numpyro_terms,
    _pyro_nesting,
    _pyro_terms,
    _rows,
    particle_plate,
)
from varbayes.models.errors import VarbayesError, check

#: φ's update per objective: the sleep phase, or RWS's wake-φ.
PHI = {"wake-sleep": "sleep", "rws": "wake"}


def check_particles(objective: str, num_particles: int) -> None:
    """One line for an objective / K that cannot train: RWS's wake-φ needs K ≥ 2."""
    check(objective in PHI, f"objective must be one of {tuple(PHI)}, got {objective!r}")
    check(num_particles >= (2 if PHI[objective] == "wake" else 1),
          f"--objective rws weights the guide's K draws against each other, which needs "
          f"--particles >= 2 (got {num_particles}): pass e.g. --particles 5, or use "
          "--objective wake-sleep")


def _is_factor(site: dict) -> bool:
    """A ``factor`` or a Pyro ``deterministic``: observed, but not data."""
    return (type(site["fn"]).__name__ == "Unit"
            or bool((site.get("infer") or {}).get("_deterministic")))


def _refuse_auxiliary(trace: Any) -> None:
    """One line for a guide with auxiliary sites (an ``AutoContinuous``-style autoguide): its
    latents are deterministic functions of a joint draw that the phases cannot condition."""
    for name, s in trace.items():
        if s["type"] == "sample" and (s.get("infer") or {}).get("is_auxiliary"):
            raise VarbayesError(
                f"guide site {name!r} is auxiliary (an autoguide's joint draw): wake-sleep and "
                "rws condition the guide on each latent, so write the guide with one sample "
                "site per latent (e.g. AutoNormal), or train with --objective elbo")


def _fantasy_args(observed: dict[str, Any], drawn: dict[str, Any], args: tuple,
                  kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each observed site's data replaced by its fantasy: the
    argument that *is* the site's ``obs`` value takes the drawn value."""
    args, kwargs = list(args), dict(kwargs)
    for name, obs in observed.items():
        where = [i for i, a in enumerate(args) if a is obs]
        keys = [k for k, a in kwargs.items() if a is obs]
        if not where and not keys:
            raise VarbayesError(
                f"observed site {name!r} does not take its value from an argument of the "
                "model: the sleep phase runs the guide on the model's fantasies in place of "
                "the data, so pass the data itself as obs= (e.g. sample('x', ..., obs=x)), "
                "or train with --objective elbo / iwae")
        for i in where:
            args[i] = drawn[name]
        for k in keys:
            kwargs[k] = drawn[name]
    return tuple(args), kwargs


def _pyro_record(observed: dict[str, Any]) -> Any:
    from pyro.poutine.messenger import Messenger

    class Record(Messenger):  # sees each message before uncondition releases it
        def _pyro_sample(self, msg: dict) -> None:
            if msg["is_observed"] and not _is_factor(msg):
                observed[msg["name"]] = msg["value"]

    return Record()


def _numpyro_record(fn: Callable[..., None], observed: dict[str, Any]) -> Callable[..., None]:
    from numpyro.primitives import Messenger

    class Record(Messenger):
        def process_message(self, msg: dict) -> None:
            if msg["type"] == "sample" and msg["is_observed"] and not _is_factor(msg):
                observed[msg["name"]] = msg["value"]

    return Record(fn)


# --------------------------------------------------------------------------------- Pyro

class PyroWakeSleep:
    """Wake-sleep (``objective="wake-sleep"``) or RWS (``"rws"``) with K draws, as a Pyro
    ELBO-like object: ``differentiable_loss`` (−L_K in value, nats; its gradient is wake θ's
    and the φ update's) and ``loss`` (−L_K, a float), on ``model(*args)`` and
    ``guide(*args)``."""

    def __init__(self, num_particles: int, objective: str = "wake-sleep"):
        check_particles(objective, num_particles)
        self.K = int(num_particles)
        self.phi = PHI[objective]
        self._nest: int | None = None

    def _plate(self, fn: Callable[..., None], nest: int) -> Callable[..., None]:
        return particle_plate(fn, self.K, nest)

    def differentiable_loss(self, model: Callable[..., None], guide: Callable[..., None],
                            *args: Any, **kwargs: Any) -> Any:
        import torch
        from pyro import poutine
        from pyro.poutine.util import site_is_subsample

        rows = _rows(args)
        if self._nest is None:
            self._nest = _pyro_nesting(model, guide, args, kwargs)
        nest = self._nest
        with torch.no_grad():  # the wake draws, held fixed
            g = poutine.trace(self._plate(guide, nest)).get_trace(*args, **kwargs)
            _refuse_auxiliary(g.nodes)
            lq0, _, _ = _pyro_terms(g, rows, nest, latent_only=True)
        views = {n: s["value"].detach() for n, s in g.nodes.items()
                 if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}
        m = poutine.trace(self._plate(poutine.condition(model, data=views), nest)).get_trace(
            *args, **kwargs)
        lp, glob, scale = _pyro_terms(m, rows, nest, latent_only=False)
        lp = lp.expand(self.K, rows)
        with torch.no_grad():
            lw = lp - lq0
            c = torch.softmax(lw, 0)
            value = scale * (lw.logsumexp(0) - math.log(self.K)).sum() + _mean(glob)
        surrogate = scale * (c * lp).sum() + _mean(glob)
        if self.phi == "wake":
            q = poutine.trace(self._plate(poutine.condition(guide, data=views), nest)
                              ).get_trace(*args, **kwargs)
            lq, _, _ = _pyro_terms(q, rows, nest, latent_only=False)
            surrogate = surrogate + scale * (c * lq).sum()
        else:
            surrogate = surrogate + self._sleep(model, guide, args, kwargs, rows, nest)
        return -(value + surrogate - surrogate.detach())

    def _sleep(self, model: Callable[..., None], guide: Callable[..., None], args: tuple,
               kwargs: dict, rows: int, nest: int) -> Any:
        """scale · Σ_i log q_φ(z_i|x_i) on one fantasy (z_i, x_i) ~ p_θ per datapoint."""
        import torch
        from pyro import poutine
        from pyro.poutine.util import site_is_subsample

        observed: dict[str, Any] = {}
        with torch.no_grad():
            f = poutine.trace(uncondition(_pyro_record(observed)(model), backend="pyro")
                              ).get_trace(*args, **kwargs)
        drawn = {n: s["value"].detach() for n, s in f.nodes.items()
                 if s["type"] == "sample" and not _is_factor(s) and not site_is_subsample(s)}
        f_args, f_kwargs = _fantasy_args(observed, drawn, args, kwargs)
        latents = {n: v for n, v in drawn.items() if n not in observed}
        q = poutine.trace(poutine.condition(guide, data=latents)).get_trace(*f_args, **f_kwargs)
        lq, _, scale = _pyro_terms(q, rows, nest, latent_only=False)
        return scale * lq.sum()

    def loss(self, model: Callable[..., None], guide: Callable[..., None], *args: Any,
             **kwargs: Any) -> float:
        import torch

        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def _mean(glob: Any) -> Any:
    return glob if isinstance(glob, float) else glob.mean()


# ------------------------------------------------------------------------------ NumPyro

def numpyro_wake_sleep(num_particles: int, objective: str = "wake-sleep") -> Any:
    """Wake-sleep (``objective="wake-sleep"``) or RWS (``"rws"``) with K draws, as a NumPyro
    ELBO: ``loss`` is −L_K (nats) and its gradient wake θ's and the φ update's."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from numpyro import handlers
    from numpyro.infer.elbo import ELBO

    check_particles(objective, num_particles)
    phi = PHI[objective]
    stop = jax.lax.stop_gradient

    def sleep(key: Any, params: dict, model: Callable[..., None], guide: Callable[..., None],
              args: tuple, kwargs: dict, rows: int) -> Any:
        model_key, guide_key = jax.random.split(key)
        observed: dict[str, Any] = {}
        f = handlers.trace(handlers.seed(handlers.substitute(uncondition(
            _numpyro_record(model, observed), backend="numpyro"), data=stop(params)),
            model_key)).get_trace(*args, **kwargs)
        drawn = {n: stop(s["value"]) for n, s in f.items()
                 if s["type"] == "sample" and not _is_factor(s)}
        f_args, f_kwargs = _fantasy_args(observed, drawn, args, kwargs)
        latents = {n: v for n, v in drawn.items() if n not in observed}
        q = handlers.trace(handlers.seed(handlers.condition(handlers.substitute(
            guide, data=params), data=latents), guide_key)).get_trace(*f_args, **f_kwargs)
        lq, _, scale = _numpyro_terms(q, rows, latent_only=False)
        return scale * jnp.sum(lq)

    class WakeSleep(ELBO):
        def __init__(self) -> None:
            super().__init__(num_particles=num_particles)
            self.K = int(num_particles)
            self.phi = phi

        def loss_with_mutable_state(self, rng_key: Any, param_map: dict,
                                    model: Callable[..., None], guide: Callable[..., None],
                                    *args: Any, **kwargs: Any) -> dict:
            rows = _rows(args)
            wake_key, sleep_key = jax.random.split(rng_key)
            keys = wake_key[None] if self.K == 1 else jax.random.split(wake_key, self.K)
            found: dict[str, Any] = {}

            def one(key: Any) -> tuple[Any, Any, Any, Any]:
                model_key, guide_key = jax.random.split(key)
                g = handlers.trace(handlers.seed(handlers.substitute(
                    guide, data=stop(param_map)), guide_key)).get_trace(*args, **kwargs)
                _refuse_auxiliary(g)
                lq0, _, _ = _numpyro_terms(g, rows, latent_only=True)
                views = {n: stop(s["value"]) for n, s in g.items()
                         if s["type"] == "sample" and not s["is_observed"]}
                m = handlers.trace(handlers.seed(handlers.condition(handlers.substitute(
                    model, data=param_map), data=views), model_key)).get_trace(*args, **kwargs)
                lp, glob, scale = _numpyro_terms(m, rows, latent_only=False)
                found["scale"] = scale
                lq = jnp.zeros(rows)
                if self.phi == "wake":
                    q = handlers.trace(handlers.seed(handlers.condition(handlers.substitute(
                        guide, data=param_map), data=views), guide_key)).get_trace(
                        *args, **kwargs)
                    lq, _, _ = _numpyro_terms(q, rows, latent_only=False)
                return (jnp.broadcast_to(lp, (rows,)), jnp.broadcast_to(lq0, (rows,)),
                        jnp.broadcast_to(lq, (rows,)), jnp.asarray(glob, jnp.float32))

            lp, lq0, lq, glob = jax.vmap(one)(keys)
            scale = found["scale"]
            lw = stop(lp - lq0)
            c = jax.nn.softmax(lw, 0)
            value = scale * jnp.sum(logsumexp(lw, 0) - math.log(self.K)) + stop(jnp.mean(glob))
            surrogate = scale * jnp.sum(c * lp) + jnp.mean(glob)
            if self.phi == "wake":
                surrogate = surrogate + scale * jnp.sum(c * lq)
            else:
                surrogate = surrogate + sleep(sleep_key, param_map, model, guide, args, kwargs,
                                              rows)
            return {"loss": -(value + surrogate - stop(surrogate)), "mutable_state": None}

    return WakeSleep()
