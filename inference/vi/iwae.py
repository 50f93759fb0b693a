"""Importance-weighted objectives for any model+guide with per-datapoint latents: IWAE and DReG.

For datapoint i and K draws z_ik ~ q_φ(z|x_i), the log weights are
log w_ik = log p_θ(x_i, z_ik) − log q_φ(z_ik|x_i) (every site inside the data plate, summed
over its other dims), and the IWAE bound (Burda, Grosse & Salakhutdinov 2016) is

    L_K(x_i) = log (1/K) Σ_k w_ik  ≤  log p_θ(x_i),

tighter as K grows (L_1 is the ELBO). The training objective is the data plate's scale N/M
times Σ_i L_K(x_i) over the minibatch, plus the model's global non-latent terms (e.g. a
weight prior written as a ``factor``), counted once and averaged over the K draws, in nats.

Gradients (both reparameterized; every latent must be):

- ``iwae``: the gradient of L_K itself, Σ_k w̃_ik ∇ log w_ik with w̃ = softmax_k(log w).
  Its signal-to-noise ratio for φ falls like 1/√K (Rainforth et al. 2018).
- ``dreg``: the same θ-gradient, and for φ the doubly-reparameterized estimator of Tucker,
  Lawson, Gu & Maddison (2018), Σ_k w̃_ik² ∂log w_ik/∂z · dz_ik/dφ, where ∂/∂z holds φ fixed
  in log q (the guide runs again on the drawn z with its params stopped, so that a
  hierarchical guide's q(z₂|z₁) keeps its dependence on z₁). Same expectation, no
  vanishing signal.

Pyro: the K draws are one vectorized plate outside the model's plates; DReG scales the
gradient that reaches each drawn z by w̃ with a tensor hook. NumPyro: the K draws are a
``vmap`` over split keys (K = 1 uses the key as ``Trace_ELBO`` does, so L_1 is its ELBO on
the same key); DReG finds w̃ in a first (stopped) pass, which XLA shares with the second.

The data plate is the plate whose (subsample) size is the batch's number of rows; a latent
site outside it, or two plates of that size on one site, is refused with one line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from varbayes.models.errors import VarbayesError, check

#: Name of the Pyro plate that vectorizes the K draws.
PARTICLES = "iwae_particles"


def _rows(args: Sequence[Any]) -> int:
    first = next((a for a in args if a is not None and hasattr(a, "shape")), None)
    check(first is not None and len(first.shape) >= 1,
          "the iwae / dreg objectives need a per-datapoint array as the first batch argument")
    return int(first.shape[0])


def _data_dim(site: dict, rows: int) -> int | None:
    """The dim (negative) of the site's data plate: the plate of ``rows`` (None: global)."""
    dims = [f.dim for f in site["cond_indep_stack"]
            if f.name != PARTICLES and f.size == rows and f.dim is not None]
    check(len(dims) <= 1, f"site {site['name']!r} is in {len(dims)} plates of the batch size "
                          f"{rows}: the iwae / dreg objectives need one data plate")
    return dims[0] if dims else None


def _refuse_global(name: str) -> VarbayesError:
    return VarbayesError(f"latent site {name!r} is outside the data plate: the iwae, dreg, "
                         "wake-sleep and rws objectives weight per-datapoint latents only; "
                         "train this model with --objective elbo")


def _scale(site: dict) -> float | Any:
    return 1.0 if site.get("scale") is None else site["scale"]


# --------------------------------------------------------------------------------- Pyro

def _pyro_terms(trace: Any, rows: int, nest: int, latent_only: bool
                ) -> tuple[Any, Any, Any]:
    """Per-site log densities of ``trace`` summed into (local (K|1, M|1), global (K|1,),
    scale of the local terms)."""
    import torch
    from pyro.poutine.util import site_is_subsample

    local, glob, scale = 0.0, 0.0, None
    for name, site in trace.nodes.items():
        if (site["type"] != "sample" or site["infer"].get("is_auxiliary")
                or site_is_subsample(site)):
            continue
        if latent_only and site["is_observed"]:
            continue
        lp = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            lp = torch.where(torch.as_tensor(site["mask"]), lp, lp.new_zeros(()))
        check(lp.dim() <= nest + 1, f"site {name!r} has more batch dims ({lp.dim()}) than the "
                                    f"{nest} plates found")
        lp = lp.reshape((1,) * (nest + 1 - lp.dim()) + tuple(lp.shape))
        d = _data_dim(site, rows)
        if d is None:
            if not site["is_observed"]:
                raise _refuse_global(name)
            glob = glob + _scale(site) * lp.reshape(lp.shape[0], -1).sum(-1)
            continue
        axis = nest + 1 + d
        keep = lp.movedim(axis, 1)
        local = local + keep.reshape(keep.shape[0], keep.shape[1], -1).sum(-1)
        s = _scale(site)
        if scale is not None and float(s) != float(scale):
            raise VarbayesError(f"site {name!r} has scale {float(s)}, another {float(scale)}: "
                                "the iwae / dreg objectives need one scale for every "
                                "per-datapoint site")
        scale = s
    return local, glob, 1.0 if scale is None else scale


def _pyro_nesting(model: Callable[..., None], guide: Callable[..., None], args: tuple,
                  kwargs: dict) -> int:
    """The number of plates the model and guide nest (a trace of each, the RNG restored)."""
    import torch
    from pyro import poutine

    with torch.random.fork_rng(), torch.no_grad():
        g = poutine.trace(guide).get_trace(*args, **kwargs)
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(*args, **kwargs)
    dims = [-f.dim for t in (g, m) for s in t.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


def particle_plate(fn: Callable[..., None], K: int, nest: int) -> Callable[..., None]:
    """``fn`` run inside the Pyro plate of K draws, outside the model's ``nest`` plates."""
    import pyro

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(PARTICLES, K, dim=-(nest + 1)):
            return fn(*args, **kwargs)

    return wrapped


def _align(c: Any, value: Any, event_dim: int, nest: int, d: int) -> Any:
    """``c`` (K, M) shaped to broadcast against a site value (..., K, .., M, .., event)."""
    batch = value.dim() - event_dim
    shape = [1] * value.dim()
    shape[batch - (nest + 1)] = c.shape[0]
    shape[batch + d] = c.shape[1]
    return c.reshape(shape)


class PyroIWAE:
    """The K-sample bound as a Pyro ELBO-like object: ``differentiable_loss`` (the negated
    objective, nats, a tensor to call ``backward`` on: the IWAE or DReG gradient) and
    ``loss`` (a float), on ``model(*args)`` and ``guide(*args)``.

    ``log_weights`` returns the (K, M) log weights and ``bound`` the per-datapoint L_K.
    """

    def __init__(self, num_particles: int, dreg: bool = False):
        self.K = int(num_particles)
        self.dreg = dreg
        self._nest: int | None = None

    def _plate(self, fn: Callable[..., None], nest: int) -> Callable[..., None]:
        return particle_plate(fn, self.K, nest)

    def _traces(self, model: Callable[..., None], guide: Callable[..., None], args: tuple,
                kwargs: dict) -> tuple[Any, Any, int]:
        from pyro import poutine

        if self._nest is None:
            self._nest = _pyro_nesting(model, guide, args, kwargs)
        nest = self._nest
        g = poutine.trace(self._plate(guide, nest)).get_trace(*args, **kwargs)
        m = poutine.trace(poutine.replay(self._plate(model, nest), trace=g)).get_trace(
            *args, **kwargs)
        return g, m, nest

    def log_weights(self, model: Callable[..., None], guide: Callable[..., None],
                    *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        """(log w (K, M), global terms (K|1,), the data plate's scale), in nats."""
        rows = _rows(args)
        g, m, nest = self._traces(model, guide, args, kwargs)
        lp, glob, scale = _pyro_terms(m, rows, nest, latent_only=False)
        lq, _, _ = _pyro_terms(g, rows, nest, latent_only=True)
        return (lp - lq).expand(self.K, rows), glob, scale

    def bound(self, model: Callable[..., None], guide: Callable[..., None], *args: Any,
              **kwargs: Any) -> Any:
        """Per-datapoint L_K, (M,) nats (global terms left out)."""
        lw, _, _ = self.log_weights(model, guide, *args, **kwargs)
        return lw.logsumexp(0) - math.log(self.K)

    def differentiable_loss(self, model: Callable[..., None], guide: Callable[..., None],
                            *args: Any, **kwargs: Any) -> Any:
        if self.dreg:
            return self._dreg_loss(model, guide, args, kwargs)
        lw, glob, scale = self.log_weights(model, guide, *args, **kwargs)
        bound = (lw.logsumexp(0) - math.log(self.K)).sum()
        return -(scale * bound + _mean(glob))

    def loss(self, model: Callable[..., None], guide: Callable[..., None], *args: Any,
             **kwargs: Any) -> float:
        import torch

        with torch.no_grad():
            lw, glob, scale = self.log_weights(model, guide, *args, **kwargs)
            return -float(scale * (lw.logsumexp(0) - math.log(self.K)).sum() + _mean(glob))

    def _dreg_loss(self, model: Callable[..., None], guide: Callable[..., None], args: tuple,
                   kwargs: dict) -> Any:
        import pyro
        import torch
        from pyro import poutine
        from pyro.poutine.util import site_is_subsample

        rows = _rows(args)
        nest = self._nest if self._nest is not None else _pyro_nesting(model, guide, args,
                                                                         kwargs)
        self._nest = nest
        g = poutine.trace(self._plate(guide, nest)).get_trace(*args, **kwargs)
        latents = {n: s for n, s in g.nodes.items()
                   if s["type"] == "sample" and not s["is_observed"]
                   and not s["infer"].get("is_auxiliary") and not site_is_subsample(s)}
        for n, s in latents.items():
            check(s["fn"].has_rsample, f"latent site {n!r} ({type(s['fn']).__name__}) has no "
                                       "reparameterized sampler: dreg needs one")
            if _data_dim(s, rows) is None:
                raise _refuse_global(n)
        views = {n: s["value"].clone() for n, s in latents.items()}  # where w̃ is applied
        m = poutine.trace(self._plate(poutine.condition(model, data=views), nest)).get_trace(
            *args, **kwargs)
        params = [p for _, p in pyro.get_param_store().named_parameters()]
        flags = [p.requires_grad for p in params]
        try:  # log q with φ held fixed: the guide again, on the drawn z, params stopped
            for p in params:
                p.requires_grad_(False)
            with warnings.catch_warnings():  # pyro.module on a module with stopped params
                warnings.filterwarnings("ignore", "(?s).*not registered in the param store")
                q = poutine.trace(self._plate(poutine.condition(guide, data=views), nest)
                                  ).get_trace(*args, **kwargs)
            lq, _, _ = _pyro_terms(q, rows, nest, latent_only=False)
        finally:
            for p, f in zip(params, flags, strict=True):
                p.requires_grad_(f)
        lp, glob, scale = _pyro_terms(m, rows, nest, latent_only=False)
        lw = (lp - lq).expand(self.K, rows)
        with torch.no_grad():
            c = torch.softmax(lw, 0)
            bound = scale * (lw.logsumexp(0) - math.log(self.K)).sum() + _mean(glob)
        for n, v in views.items():
            if v.requires_grad:
                cn = _align(c, v, latents[n]["fn"].event_dim, nest, _data_dim(latents[n], rows))
                v.register_hook(lambda grad, cn=cn: grad * cn)
        surrogate = scale * (c * lw).sum() + _mean(glob)
        return -(bound + surrogate - surrogate.detach())


def _mean(glob: Any) -> Any:
    return glob if isinstance(glob, float) else glob.mean()


# ------------------------------------------------------------------------------ NumPyro

def _numpyro_terms(trace: dict, rows: int, latent_only: bool) -> tuple[Any, Any, Any]:
    """Per-site log densities of a single-draw ``trace`` summed into (local (M,) or 0,
    global scalar, scale of the local terms)."""
    import jax.numpy as jnp

    local, glob, scale = 0.0, 0.0, None
    for name, site in trace.items():
        if site["type"] != "sample" or site.get("infer", {}).get("is_auxiliary"):
            continue
        if latent_only and site["is_observed"]:
            continue
        if site.get("intermediates"):
            lp = site["fn"].log_prob(site["value"], site["intermediates"])
        else:
            lp = site["fn"].log_prob(site["value"])
        if site.get("mask") is not None:
            lp = jnp.where(site["mask"], lp, 0.0)
        lp = jnp.asarray(lp)
        d = _data_dim(site, rows)
        if d is None:
            if not site["is_observed"]:
                raise _refuse_global(name)
            glob = glob + _scale(site) * jnp.sum(lp)
            continue
        check(lp.ndim >= -d, f"site {name!r} is not broadcast over its data plate")
        lp = jnp.moveaxis(lp, lp.ndim + d, 0)
        local = local + lp.reshape(lp.shape[0], -1).sum(-1)
        s = _scale(site)
        scale = s
    return local, glob, 1.0 if scale is None else scale


def _scale_grad() -> Callable[[Any, Any], Any]:
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def scale_grad(x: Any, c: Any) -> Any:
        return x

    def fwd(x: Any, c: Any) -> tuple[Any, Any]:
        return x, c

    def bwd(c: Any, g: Any) -> tuple[Any, Any]:
        return g * c, jnp.zeros_like(c)

    scale_grad.defvjp(fwd, bwd)
    return scale_grad


def numpyro_iwae(num_particles: int, dreg: bool = False) -> Any:
    """The K-sample bound as a NumPyro ELBO (``loss`` is the negated objective, nats; its
    gradient is the IWAE or, with ``dreg``, the DReG one). ``.bound(key, params, model,
    guide, *args)`` gives the per-datapoint L_K, (M,) nats."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from numpyro import handlers
    from numpyro.infer.elbo import ELBO

    scale_grad = _scale_grad()

    def traces(key: Any, params: dict, model: Callable[..., None], guide: Callable[..., None],
               args: tuple, kwargs: dict) -> tuple[dict, dict]:
        model_key, guide_key = jax.random.split(key)
        g = handlers.trace(handlers.seed(handlers.substitute(guide, data=params), guide_key)
                           ).get_trace(*args, **kwargs)
        m = handlers.trace(handlers.replay(handlers.seed(handlers.substitute(
            model, data=params), model_key), g)).get_trace(*args, **kwargs)
        return g, m

    class IWAE(ELBO):
        def __init__(self) -> None:
            super().__init__(num_particles=num_particles)
            self.K = int(num_particles)
            self.dreg = dreg

        def _keys(self, rng_key: Any) -> Any:
            return rng_key[None] if self.K == 1 else jax.random.split(rng_key, self.K)

        def log_weights(self, rng_key: Any, params: dict, model: Callable[..., None],
                        guide: Callable[..., None], *args: Any, **kwargs: Any
                        ) -> tuple[Any, Any, Any]:
            """(log w (K, M), global terms (K,), the data plate's scale), nats."""
            rows = _rows(args)
            found: dict[str, Any] = {}

            def one(key: Any) -> tuple[Any, Any]:
                g, m = traces(key, params, model, guide, args, kwargs)
                lp, glob, scale = _numpyro_terms(m, rows, latent_only=False)
                lq, _, _ = _numpyro_terms(g, rows, latent_only=True)
                found["scale"] = scale
                return jnp.broadcast_to(lp - lq, (rows,)), jnp.asarray(glob, jnp.float32)

            lw, glob = jax.vmap(one)(self._keys(rng_key))
            return lw, glob, found["scale"]

        def bound(self, rng_key: Any, params: dict, model: Callable[..., None],
                  guide: Callable[..., None], *args: Any, **kwargs: Any) -> Any:
            lw, _, _ = self.log_weights(rng_key, params, model, guide, *args, **kwargs)
            return logsumexp(lw, 0) - math.log(self.K)

        def loss_with_mutable_state(self, rng_key: Any, param_map: dict,
                                    model: Callable[..., None], guide: Callable[..., None],
                                    *args: Any, **kwargs: Any) -> dict:
            if not self.dreg:
                lw, glob, scale = self.log_weights(rng_key, param_map, model, guide, *args,
                                                   **kwargs)
                value = scale * jnp.sum(logsumexp(lw, 0) - math.log(self.K)) + jnp.mean(glob)
                return {"loss": -value, "mutable_state": None}
            return {"loss": -self._dreg(rng_key, param_map, model, guide, args, kwargs),
                    "mutable_state": None}

        def _dreg(self, rng_key: Any, params: dict, model: Callable[..., None],
                  guide: Callable[..., None], args: tuple, kwargs: dict) -> Any:
            rows = _rows(args)
            stopped = jax.lax.stop_gradient(params)
            keys = self._keys(rng_key)
            lw0, glob0, scale = self.log_weights(rng_key, stopped, model, guide, *args,
                                                 **kwargs)
            c = jax.lax.stop_gradient(jax.nn.softmax(lw0, 0))  # (K, M)

            def one(key: Any, ck: Any) -> Any:
                model_key, guide_key = jax.random.split(key)
                g = handlers.trace(handlers.seed(handlers.substitute(guide, data=params),
                                                 guide_key)).get_trace(*args, **kwargs)
                views = {}
                for n, s in g.items():
                    if s["type"] != "sample" or s["is_observed"]:
                        continue
                    d = _data_dim(s, rows)
                    if d is None:
                        raise _refuse_global(n)
                    check(s["fn"].has_rsample, f"latent site {n!r} ({type(s['fn']).__name__}) "
                                               "has no reparameterized sampler: dreg needs one")
                    v = s["value"]
                    shape = [1] * v.ndim
                    shape[v.ndim - s["fn"].event_dim + d] = rows
                    views[n] = scale_grad(v, ck.reshape(shape))
                m = handlers.trace(handlers.seed(handlers.condition(handlers.substitute(
                    model, data=params), data=views), model_key)).get_trace(*args, **kwargs)
                q = handlers.trace(handlers.seed(handlers.condition(handlers.substitute(
                    guide, data=stopped), data=views), guide_key)).get_trace(*args, **kwargs)
                lp, glob, _ = _numpyro_terms(m, rows, latent_only=False)
                lq, _, _ = _numpyro_terms(q, rows, latent_only=False)
                return jnp.broadcast_to(lp - lq, (rows,)), jnp.asarray(glob, jnp.float32)

            lw, glob = jax.vmap(one)(keys, c)  # θ reaches the global terms here
            bound = scale * jnp.sum(logsumexp(lw0, 0) - math.log(self.K)) + jnp.mean(glob0)
            surrogate = scale * jnp.sum(c * lw) + jnp.mean(glob)
            return bound + surrogate - jax.lax.stop_gradient(surrogate)

    return IWAE()
