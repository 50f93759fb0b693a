"""One SVI step of a 784-400-20 VAE, batch 128: our Pyro and NumPyro paths against the best
hand-written torch and JAX loops we know, with identical networks, and against the GEMM
roofline of the step's own shapes.

All routes use the analytic-KL ELBO (estimator B; TraceMeanField_ELBO on our side), the
same initial weights, Adam 1e-3 and one fixed binary batch. Each group (JAX: hand-written
and NumPyro; torch: hand-written and our Pyro route; then the Pyro variants) runs
interleaved in one process (:func:`benchmarks._timing.interleaved_medians`), one group after
the other; each timed call runs ``steps`` optimizer steps. Routes:

- ``jax``: jit + optax, the state donated to the compiled step (in-place updates);
  ``numpyro``: :func:`varbayes.inference.vi.svi.numpyro_svi`'s update, jitted and donated,
  as ``fit`` runs it;
- ``torch_best``: the loss written out and ``torch.compile``-d, ``Adam(fused=True)``;
  ``torch``: the same loss eager with the default (foreach) Adam, as most torch code is
  written;
- ``pyro``: :func:`varbayes.inference.vi.svi.pyro_step` as ``fit`` runs a long run: the
  loss of :func:`varbayes.inference.vi.svi.pyro_loss` compiled with inductor
  (:mod:`varbayes.inference.vi.pyro_compile`), the fused Adam of
  :func:`varbayes.inference.vi.svi.pyro_optimizer`, validation off;
- the Pyro variants that explain the gap: our loop with TorchScript
  (``pyro_torchscript``) and uncompiled (``pyro_nojit``), and the stock ``SVI.step`` with
  validation on or off, ``JitTrace_ELBO``, ``JitTraceMeanField_ELBO`` (which re-traces every
  step in Pyro 1.9.x) and our fixed one.

Reported: median milliseconds per step of every route; ``numpyro_over_jax``,
``pyro_over_torch_best`` (the target) and ``pyro_over_torch``; and the roofline:
``step_gflop`` (the GEMM work of one step: forward, the weight gradients and the input
gradients of every layer but the first), ``sgemm_gflops_torch`` / ``sgemm_gflops_jax``
(that work timed as bare ``torch.mm`` / jitted ``jnp.dot`` calls of the same shapes),
``roofline_ms`` (the faster of the two) and every route's ``<route>_gflops`` and
``<route>_of_roofline`` (roofline_ms over its ms per step; 1 is the limit).
"""

from __future__ import annotations

import functools
import itertools
import os

import numpy as np

from benchmarks._timing import interleaved_medians
from varbayes.models.vae.config import VAEConfig

X_DIM, HIDDEN, Z_DIM, BATCH = 784, 400, 20, 128
#: ``--quick``: a tiny network, only to check the plumbing. It compiles without inductor
#: (``torch.compile``'s ``aot_eager`` backend, TorchScript for our Pyro step): inductor's
#: C++ compile takes 15-25 s per graph here, and its own tests cover it.
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
        pyro_loss,
        pyro_optimizer,
        pyro_step,
    )
    from varbayes.models.vae import pyro_model as pm
    from varbayes.models.vae.config import init_weights

    cfg = _config(quick)
    weights = init_weights(cfg, 0)
    x = torch.as_tensor(x_np)
    scale = n_data / len(x_np)

    def handwritten(compiled: bool) -> object:
        """The same modules, the loss written out; the best: compiled, fused Adam."""
        enc_h, dec_h = pm.build(cfg, weights)[1:]
        opt_h = torch.optim.Adam([*enc_h.parameters(), *dec_h.parameters()], lr=1e-3,
                                 **({"fused": True} if compiled else {}))

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            loc, sd = enc_h(x)
            z = loc + sd * torch.randn_like(sd)
            logits, _ = dec_h(z)
            rec = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x, reduction="none").sum(-1)
            kl = 0.5 * (loc**2 + sd**2 - 2 * torch.log(sd) - 1).sum(-1)
            return -scale * (rec - kl).sum()

        if compiled:
            loss_fn = torch.compile(loss_fn, backend="aot_eager" if quick else "inductor")

        def run() -> None:
            for _ in range(steps):
                loss = loss_fn(x)
                opt_h.zero_grad(set_to_none=True)
                loss.backward()
                opt_h.step()

        return run

    routes: dict[str, object] = {}

    def ours(compiler: str) -> object:
        pyro.clear_param_store()
        vae = pm.build(cfg, weights)
        model = functools.partial(pm.model, vae, n_data=n_data)
        guide = functools.partial(pm.guide, vae, n_data=n_data)
        poutine.trace(guide).get_trace(x)
        poutine.trace(model).get_trace(x)
        named = dict(pyro.get_param_store().named_parameters())
        params = [named[n] for n in sorted(named)]
        options = SVIOptions(backend="pyro", jit=compiler != "none", compiler=compiler)
        step = pyro_step(pyro_loss(options, model, guide, params, compiler),
                         pyro_optimizer(options, params))

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
        "pyro": lambda: ours("torchscript" if quick else "inductor"),
        "pyro_torchscript": lambda: ours("torchscript"),
        "pyro_nojit": lambda: ours("none"),
        "pyro_svi_stock": lambda: stock(pyro.infer.TraceMeanField_ELBO(), True),
        "pyro_svi_novalidate": lambda: stock(pyro.infer.TraceMeanField_ELBO(), False),
        "pyro_svi_jit_trace": lambda: stock(pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True),
                                            False),
        "pyro_svi_jit_meanfield": lambda: stock(
            pyro.infer.JitTraceMeanField_ELBO(ignore_jit_warnings=True), False),
        "pyro_svi_jit_meanfield_fixed": lambda: stock(
            jit_trace_meanfield_elbo(ignore_jit_warnings=True), False),
    }
    for name in ("torch_best", "torch"):
        if names is None or name in names:
            routes[name] = handwritten(compiled=name == "torch_best")
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


# ----------------------------------------------------------------------------- roofline

def gemm_shapes(quick: bool, batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step: per dense layer the forward
    product, the weight gradient and (except for the layer that reads the data) the input
    gradient. Biases and elementwise work are not counted."""
    cfg = _config(quick)
    layers = list(itertools.pairwise((cfg.x_dim, *cfg.hidden)))
    layers += [(cfg.hidden[-1], cfg.z_dim)] * 2  # the encoder's loc and scale heads
    layers += list(itertools.pairwise((cfg.z_dim, *cfg.hidden[::-1], cfg.x_dim)))
    shapes = []
    for i, (n_in, n_out) in enumerate(layers):
        shapes += [(batch, n_in, n_out), (n_in, batch, n_out)]
        if i > 0:
            shapes.append((batch, n_out, n_in))
    return shapes


def roofline(shapes: list[tuple[int, int, int]], repeats: int, inner: int) -> dict[str, float]:
    """GFLOP of ``shapes`` and the GFLOP/s of bare torch.mm and jitted jnp.dot on them."""
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((m, k)).astype(np.float32),
              rng.standard_normal((k, n)).astype(np.float32)) for m, k, n in shapes]
    tpairs = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in pairs]
    jpairs = [(jnp.asarray(a), jnp.asarray(b)) for a, b in pairs]
    all_dots = jax.jit(lambda ps: [jnp.dot(a, b) for a, b in ps])

    def torch_mm() -> None:
        for _ in range(inner):
            for a, b in tpairs:
                torch.mm(a, b)

    def jax_dot() -> None:
        for _ in range(inner):
            out = all_dots(jpairs)
        jax.block_until_ready(out)

    t = interleaved_medians({"torch": torch_mm, "jax": jax_dot}, repeats=repeats, warmup=2)
    gflop = sum(2 * m * k * n for m, k, n in shapes) / 1e9
    return {"step_gflop": gflop, "sgemm_gflops_torch": gflop * inner / t["torch"],
            "sgemm_gflops_jax": gflop * inner / t["jax"]}


def run(quick: bool) -> dict[str, float]:
    """Median milliseconds per step of every route, the ratios and the roofline."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    steps, repeats = (3, 3) if quick else (25, 15)
    x = _batch(batch=16 if quick else BATCH)
    n_data = 60000
    # Phases in one process, each interleaved on its own: JAX against NumPyro, the torch
    # loops against our Pyro step, then plain torch against the Pyro variants. Interleaving
    # everything at once made every torch route about 2x slower: nine copies of the model
    # and its optimizer state take turns in the caches, and XLA's threads spin for a while
    # after each call.
    medians = interleaved_medians(jax_routes(x, steps, n_data, quick), repeats=repeats,
                                  warmup=2)
    medians |= interleaved_medians(
        torch_routes(x, steps, n_data, ("torch_best", "torch", "pyro"), quick),
        repeats=repeats, warmup=2)
    per_step = {name: t / steps for name, t in medians.items()}
    out: dict[str, float] = {f"{k}_ms_per_step": 1e3 * v for k, v in per_step.items()}
    out["numpyro_over_jax"] = per_step["numpyro"] / per_step["jax"]
    out["pyro_over_torch_best"] = per_step["pyro"] / per_step["torch_best"]
    out["pyro_over_torch"] = per_step["pyro"] / per_step["torch"]
    variants = ("pyro_torchscript", "pyro_nojit", "pyro_svi_stock", "pyro_svi_novalidate",
                "pyro_svi_jit_trace", "pyro_svi_jit_meanfield", "pyro_svi_jit_meanfield_fixed")
    third = interleaved_medians(torch_routes(x, steps, n_data, ("torch", *variants), quick),
                                repeats=repeats, warmup=2)
    for name in variants:  # ratios against the torch loop timed in the same phase
        out[f"{name}_ms_per_step"] = 1e3 * third[name] / steps
        out[f"{name}_over_torch"] = third[name] / third["torch"]
    roof = roofline(gemm_shapes(quick, len(x)), repeats=repeats, inner=steps)
    out |= roof
    out["roofline_ms"] = 1e3 * roof["step_gflop"] / max(roof["sgemm_gflops_torch"],
                                                        roof["sgemm_gflops_jax"])
    for name, seconds in per_step.items():
        out[f"{name}_gflops"] = roof["step_gflop"] / seconds
        out[f"{name}_of_roofline"] = out["roofline_ms"] / (1e3 * seconds)
    out["numpyro_seconds_per_mnist_epoch"] = per_step["numpyro"] * (n_data // len(x))
    out["pyro_seconds_per_mnist_epoch"] = per_step["pyro"] * (n_data // len(x))
    out["torch_threads"] = float(torch.get_num_threads())
    return out
