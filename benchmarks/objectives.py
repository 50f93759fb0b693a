"""The per-step cost of the importance-weighted objectives against the ELBO step.

One training step of the IWAE paper's one-layer network (784-200-200-50, tanh, Bernoulli),
batch 100, Adam, as ``fit`` runs it: the ELBO (``TraceMeanField_ELBO``, one sample), and
``iwae`` / ``dreg`` with K = 5 and K = 50 samples (:mod:`varbayes.inference.vi.iwae`). Each
backend's routes run interleaved in one process (:func:`benchmarks._timing.interleaved_medians`).

Reported: median ms per step of every route, and ``<backend>_<objective>_k<K>_over_elbo``,
the step's cost in ELBO steps. A K-sample step evaluates the decoder K times per datapoint,
so K is the ratio one would pay with no shared work (the encoder runs once in every route);
``..._per_sample`` divides the ratio by K. Pyro's ELBO step is compiled as a long ``fit``
run compiles it (inductor; TorchScript with ``--quick``), the weighted objectives run
uncompiled (as ``fit`` runs them), and ``pyro_elbo_eager_ms`` gives the uncompiled ELBO
step for scale.
"""

from __future__ import annotations

import functools

import numpy as np

from benchmarks._timing import interleaved_medians
from varbayes.models.vae.config import VAEConfig

X_DIM, BATCH, N_DATA = 784, 100, 60_000
ROUTES = (("iwae", 5), ("dreg", 5), ("iwae", 50), ("dreg", 50))


def _config(quick: bool) -> VAEConfig:
    if quick:
        return VAEConfig(x_dim=X_DIM, z_dim=4, hidden=(16,))
    return VAEConfig(x_dim=X_DIM, z_dim=50, hidden=(200, 200))


def _batch() -> np.ndarray:
    return (np.random.default_rng(0).random((BATCH, X_DIM)) < 0.13).astype(np.float32)


def _options(objective: str, k: int, backend: str, compiler: str = "none"):
    from varbayes.inference.vi.svi import SVIOptions

    return SVIOptions(backend=backend, objective=objective, particles=k, batch_size=BATCH,
                      jit=compiler != "none", compiler="torchscript" if compiler == "none"
                      else compiler)


def numpyro_routes(steps: int, quick: bool) -> dict[str, object]:
    """name -> ``() -> None`` running ``steps`` NumPyro steps of that objective."""
    import jax

    from varbayes.inference.vi.svi import bind_n_data, numpyro_svi
    from varbayes.models.vae import numpyro_model as m

    vae = m.build(_config(quick), seed=0)
    model = bind_n_data(functools.partial(m.model, vae), N_DATA)
    guide = bind_n_data(functools.partial(m.guide, vae), N_DATA)
    x = jax.numpy.asarray(_batch())
    routes = {}
    for objective, k in (("elbo", 1), *ROUTES):
        svi = numpyro_svi(model, guide, _options(objective, k, "numpyro"))
        update = jax.jit(svi.update, donate_argnums=0)
        # the initial params alias the module's arrays, and the update donates its state
        holder = {"state": jax.tree_util.tree_map(jax.numpy.copy,
                                                  svi.init(jax.random.PRNGKey(0), x))}

        def run(update=update, holder=holder) -> None:
            for _ in range(steps):
                holder["state"], loss = update(holder["state"], x)
            loss.block_until_ready()

        routes[objective if k == 1 else f"{objective}_k{k}"] = run
    return routes


def pyro_routes(steps: int, quick: bool) -> dict[str, object]:
    """name -> ``() -> None`` running ``steps`` Pyro steps of that objective."""
    import pyro
    import torch
    from pyro import poutine

    from varbayes.inference.vi.svi import bind_n_data, pyro_loss, pyro_optimizer, pyro_step
    from varbayes.models.vae import pyro_model as m

    vae = m.build(_config(quick), seed=0)
    model = bind_n_data(functools.partial(m.model, vae), N_DATA)
    guide = bind_n_data(functools.partial(m.guide, vae), N_DATA)
    x = torch.as_tensor(_batch())
    pyro.clear_param_store()
    poutine.trace(guide).get_trace(x)
    poutine.trace(model).get_trace(x)
    params = [p for _, p in sorted(pyro.get_param_store().named_parameters())]
    best = "torchscript" if quick else "inductor"
    routes = {}
    for objective, k, compiler, name in (("elbo", 1, best, "elbo"),
                                         ("elbo", 1, "none", "elbo_eager"),
                                         *((o, n, "none", f"{o}_k{n}") for o, n in ROUTES)):
        options = _options(objective, k, "pyro", compiler)
        step = pyro_step(pyro_loss(options, model, guide, params, compiler),
                         pyro_optimizer(options, params))

        def run(step=step) -> None:
            with pyro.validation_enabled(False):
                for _ in range(steps):
                    step(x)

        routes[name] = run
    return routes


def run(quick: bool = False) -> dict[str, float]:
    """Median ms per step of every route and the ratios to the ELBO step."""
    steps, repeats = (2, 2) if quick else (10, 7)
    out: dict[str, float] = {}
    for backend, make in (("numpyro", numpyro_routes), ("pyro", pyro_routes)):
        ms = {k: 1e3 * v / steps for k, v in interleaved_medians(
            make(steps, quick), repeats=repeats, warmup=1).items()}
        for name, value in ms.items():
            out[f"{backend}_{name}_ms"] = round(value, 3)
        for objective, k in ROUTES:
            ratio = ms[f"{objective}_k{k}"] / ms["elbo"]
            out[f"{backend}_{objective}_k{k}_over_elbo"] = round(ratio, 3)
            out[f"{backend}_{objective}_k{k}_per_sample"] = round(ratio / k, 3)
    return out
