"""One SVI step of a 784-400-20 VAE, batch 128: our Pyro and NumPyro paths against
hand-written torch and hand-written JAX (jit + optax) loops with identical networks.

Both JAX routes donate their state to the compiled step (in-place updates). All routes
use the analytic-KL ELBO (estimator B; TraceMeanField_ELBO on our side), the
same initial weights, Adam 1e-3 and one fixed binary batch. Each group (JAX: hand-written
and NumPyro; torch: hand-written and the Pyro variants) runs interleaved in one process
(:func:`benchmarks._timing.interleaved_medians`), one group after the other; each timed
call runs ``steps`` optimizer steps. Reported: median seconds per step for every route and
the ratios

- ``numpyro_over_jax``: :func:`varbayes.inference.vi.svi.numpyro_svi` update, jitted, over
  hand-written JAX;
- ``pyro_over_torch``: :func:`varbayes.inference.vi.svi.pyro_step` with the default compiled
  ELBO (the fixed ``JitTraceMeanField_ELBO`` of
  :func:`varbayes.inference.vi.svi.jit_trace_meanfield_elbo`, validation off) over
  hand-written torch;

plus the Pyro variants that explain the gap: our loop uncompiled, and the stock ``SVI.step`` with
validation on or off, ``JitTrace_ELBO``, ``JitTraceMeanField_ELBO`` (which re-traces every
step in Pyro 1.9.x) and the fixed one.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from benchmarks._timing import interleaved_medians
from varbayes.models.vae.config import VAEConfig

X_DIM, HIDDEN, Z_DIM, BATCH = 784, 400, 20, 128
#: ``--quick``: a tiny network, only to check the plumbing.
QUICK_HIDDEN, QUICK_Z = 16, 2


def _batch(seed: int = 0, batch: int = BATCH) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((batch, X_DIM)) < 0.13).astype(np.float32)


def _config(quick: bool) -> VAEConfig:
    if quick:
        return VAEConfig(x_dim=X_DIM, z_dim=QUICK_Z, hidden=(QUICK_HIDDEN,))
    return VAEConfig(x_dim=X_DIM, z_dim=Z_DIM, hidden=(HIDDEN,))


# ------------------------------------------------------------------------- torch routes

def torch_routes(x_np: np.ndarray, steps: int, n_data: int,
                 names: tuple[str, ...] | None = None, quick: bool = False) -> dict[str, object]:
    """Hand-written torch and the Pyro variants (``names``; default all), each a
    ``() -> None`` running ``steps`` steps."""
    import pyro
    import torch
    from pyro import poutine

    from varbayes.inference.vi.svi import (
        SVIOptions,
        jit_trace_meanfield_elbo,
        pyro_elbo,
        pyro_optimizer,
        pyro_step,
    )
    from varbayes.models.vae import pyro_model as pm
    from varbayes.models.vae.config import init_weights

    cfg = _config(quick)
    weights = init_weights(cfg, 0)
    x = torch.as_tensor(x_np)
    scale = n_data / len(x_np)

    # hand-written: the same modules, the loss written out
    enc_h, dec_h = pm.build(cfg, weights)[1:]
    opt_h = torch.optim.Adam([*enc_h.parameters(), *dec_h.parameters()], lr=1e-3)

    def handwritten() -> None:
        for _ in range(steps):
            loc, sd = enc_h(x)
            z = loc + sd * torch.randn_like(sd)
            logits, _ = dec_h(z)
            rec = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x, reduction="none").sum(-1)
            kl = 0.5 * (loc**2 + sd**2 - 2 * torch.log(sd) - 1).sum(-1)
            loss = -scale * (rec - kl).sum()
            opt_h.zero_grad(set_to_none=True)
            loss.backward()
            opt_h.step()

    routes: dict[str, object] = {"torch": handwritten}

    def ours(elbo: object | None = None) -> object:
        pyro.clear_param_store()
        vae = pm.build(cfg, weights)
        model = functools.partial(pm.model, vae, n_data=n_data)
        guide = functools.partial(pm.guide, vae, n_data=n_data)
        poutine.trace(guide).get_trace(x)
        poutine.trace(model).get_trace(x)
        params = dict(pyro.get_param_store().named_parameters())
        options = SVIOptions(backend="pyro")
        step = pyro_step(elbo or pyro_elbo(options), model, guide,
                         pyro_optimizer(options, params.values()))

        def run() -> None:
            with pyro.validation_enabled(False):
                for _ in range(steps):
                    step(x)

        return run

    # Each Pyro route owns its modules; the param store is global, so each route keeps
    # its own store and swaps it in (pyro.get_param_store().set_state is too slow).
    def stock(elbo: object, validate: bool) -> object:
        pyro.clear_param_store()
        vae = pm.build(cfg, weights)
        model = functools.partial(pm.model, vae, n_data=n_data)
        guide = functools.partial(pm.guide, vae, n_data=n_data)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)

        def run() -> None:
            with pyro.validation_enabled(validate):
                for _ in range(steps):
                    svi.step(x)

        return run

    builders = {
        "pyro": ours,
        "pyro_nojit": lambda: ours(pyro_elbo(SVIOptions(backend="pyro"), jit=False)),
        "pyro_svi_stock": lambda: stock(pyro.infer.TraceMeanField_ELBO(), True),
        "pyro_svi_novalidate": lambda: stock(pyro.infer.TraceMeanField_ELBO(), False),
        "pyro_svi_jit_trace": lambda: stock(pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True),
                                            False),
        "pyro_svi_jit_meanfield": lambda: stock(
            pyro.infer.JitTraceMeanField_ELBO(ignore_jit_warnings=True), False),
        "pyro_svi_jit_meanfield_fixed": lambda: stock(
            jit_trace_meanfield_elbo(ignore_jit_warnings=True), False),
    }
    for name, build in builders.items():
        if names is not None and name not in names:
            continue
        run = build()
        store = pyro.get_param_store()._params.copy(), \
            pyro.get_param_store()._constraints.copy()

        def swapped(run=run, store=store) -> None:
            ps = pyro.get_param_store()
            ps._params, ps._constraints = store[0], store[1]
            ps._param_to_name = {v: k for k, v in store[0].items()}
            run()

        routes[name] = swapped
    return routes


# --------------------------------------------------------------------------- JAX routes

def jax_routes(x_np: np.ndarray, steps: int, n_data: int,
               quick: bool = False) -> dict[str, object]:
    """Hand-written JAX (jit + optax) and our NumPyro SVI update, each running ``steps``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from varbayes.inference.vi.svi import SVIOptions, numpyro_svi
    from varbayes.models.vae import numpyro_model as nm
    from varbayes.models.vae.config import init_weights

    cfg = _config(quick)
    weights = init_weights(cfg, 0)
    x = jnp.asarray(x_np)
    scale = n_data / len(x_np)
    vae = nm.build(cfg, weights)

    # copies: the donated step deletes its inputs, and these must not be vae's own arrays
    params0 = jax.tree_util.tree_map(jnp.copy, eqx.filter((vae.encoder, vae.decoder),
                                                          eqx.is_inexact_array))
    static = eqx.filter((vae.encoder, vae.decoder), eqx.is_inexact_array, inverse=True)
    tx = optax.adam(1e-3)

    def loss_fn(params, key, x):
        enc, dec = eqx.combine(params, static)
        loc, sd = enc(x)
        z = loc + sd * jax.random.normal(key, loc.shape)
        logits, _ = dec(z)
        # log Bernoulli(x; σ(logits)), the stable one-exp form (torch's BCE-with-logits)
        rec = -(jnp.maximum(logits, 0) - logits * x
                + jnp.log1p(jnp.exp(-jnp.abs(logits)))).sum(-1)
        kl = 0.5 * (loc**2 + sd**2 - 2 * jnp.log(sd) - 1).sum(-1)
        return -scale * (rec - kl).sum()

    @functools.partial(jax.jit, donate_argnums=0)
    def hand_step(carry, x):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, sub, x)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    hand = {"carry": (params0, tx.init(params0), jax.random.PRNGKey(0))}

    def handwritten() -> None:
        for _ in range(steps):
            hand["carry"], loss = hand_step(hand["carry"], x)
        loss.block_until_ready()

    svi = numpyro_svi(functools.partial(nm.model, vae, n_data=n_data),
                      functools.partial(nm.guide, vae, n_data=n_data), SVIOptions())
    update = jax.jit(svi.update, donate_argnums=0)  # as in varbayes.inference.vi.svi.fit
    ours_state = {"state": jax.tree_util.tree_map(jnp.copy, svi.init(jax.random.PRNGKey(0), x))}

    def ours() -> None:
        for _ in range(steps):
            ours_state["state"], loss = update(ours_state["state"], x)
        loss.block_until_ready()

    return {"jax": handwritten, "numpyro": ours}


def run(quick: bool) -> dict[str, float]:
    """Median seconds per step of every route and the two headline ratios."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    steps, repeats = (3, 3) if quick else (25, 15)
    x = _batch(batch=16 if quick else BATCH)
    n_data = 60000
    # Phases in one process, each interleaved on its own: JAX against NumPyro, torch against
    # our Pyro step, then torch against the Pyro variants. Interleaving everything at once
    # made every torch route about 2x slower: nine copies of the model and its optimizer
    # state take turns in the caches, and XLA's threads spin for a while after each call.
    medians = interleaved_medians(jax_routes(x, steps, n_data, quick), repeats=repeats,
                                  warmup=2)
    medians |= interleaved_medians(torch_routes(x, steps, n_data, ("pyro",), quick),
                                   repeats=repeats, warmup=2)
    per_step = {name: t / steps for name, t in medians.items()}
    out: dict[str, float] = {f"{k}_ms_per_step": 1e3 * v for k, v in per_step.items()}
    out["numpyro_over_jax"] = per_step["numpyro"] / per_step["jax"]
    out["pyro_over_torch"] = per_step["pyro"] / per_step["torch"]
    variants = ("pyro_nojit", "pyro_svi_stock", "pyro_svi_novalidate", "pyro_svi_jit_trace",
                "pyro_svi_jit_meanfield", "pyro_svi_jit_meanfield_fixed")
    third = interleaved_medians(torch_routes(x, steps, n_data, variants, quick),
                                repeats=repeats, warmup=2)
    for name in variants:  # ratios against the torch loop timed in the same phase
        out[f"{name}_ms_per_step"] = 1e3 * third[name] / steps
        out[f"{name}_over_torch"] = third[name] / third["torch"]
    out["numpyro_seconds_per_mnist_epoch"] = per_step["numpyro"] * (n_data // len(x))
    out["pyro_seconds_per_mnist_epoch"] = per_step["pyro"] * (n_data // len(x))
    out["torch_threads"] = float(torch.get_num_threads())
    return out
