"""Monte Carlo EM with an HMC E-step, the AEVB paper's MCEM baseline (Kingma & Welling 2013,
section 5), for a NumPyro model with per-datapoint continuous latents.

EM maximizes log p_θ(x) by alternating a posterior over the latents with a step in θ.
Here the posterior is represented by one Markov chain state z_i per datapoint, kept across
epochs, and each visit of a minibatch does:

- **E-step:** ``hmc_steps`` HMC transitions (unit mass, ``n_leapfrog`` leapfrog steps; the
  kernel of :func:`varbayes.inference.evidence.ais_jax.hmc_step`) on p_θ(z_i|x_i) ∝
  p_θ(x_i, z_i), warm-started from where the previous sweep left z_i. After each, the
  datapoint's step size moves toward the target acceptance rate,
  ε_i ← ε_i·exp(rate·(a_i − target)), target 0.9 as in the paper.
- **M-step:** ``m_steps`` optimizer steps on −log p_θ(x, z) at those z: the data plate's
  N/M scale on the minibatch and the model's global terms once (e.g. a weight prior written
  as a ``factor``).

The model is called as for :func:`varbayes.inference.vi.svi.fit` (``(*batch, n_data=N)``)
and runs through the same epoch loop, so the data order and the draws of epoch e depend only
on (seed, e), checkpoints are atomic and ``resume`` continues bit for bit, a signal stops
after the current step, and a non-finite objective stops the run with the last good
checkpoint kept. No guide is involved. The history records ``objective``, the mean of the
minibatches' log p_θ(x, z) per datapoint (nats, at the chains' states before the M-step),
``accept`` (the E-step's mean acceptance) and ``step_size`` (the median ε).

NumPyro only: the torch HMC kernel of :mod:`varbayes.inference.evidence.ais_pyro` exists, but
the driver here is written once, in JAX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.inference.evidence.ais_jax import hmc_step
from varbayes.inference.evidence.sites import (
    flatten,
    latent_sites,
    numpyro_reduce,
    split_terms,
    unflatten,
)
from varbayes.inference.ppl import to_backend
from varbayes.inference.vi.checkpoint import (
    check_compatible,
    load_checkpoint,
    make_header,
    save_checkpoint,
)
from varbayes.inference.vi.svi import (
    OPTIMIZERS,
    FitResult,
    Transform,
    bind_n_data,
    first_nonfinite,
    run_epochs,
)
from varbayes.models.errors import check


class MCEMOptions(NamedTuple):
    """How to run Monte Carlo EM; everything except ``epochs`` and ``time_limit`` must match
    when resuming."""

    backend: str = "numpyro"
    """Only ``numpyro``."""
    epochs: int = 10
    """Passes over the training data (in total, counting resumed ones)."""
    batch_size: int = 100
    """M, datapoints per E-step and M-step; the remainder of each shuffled epoch is dropped."""
    optimizer: str = "adagrad"
    """``adagrad`` (the paper's) or ``adam``."""
    lr: float = 0.01
    """Step size of the M-step's optimizer."""
    m_steps: int = 5
    """Optimizer steps per E-step ("a few weight updates per sample")."""
    hmc_steps: int = 1
    """HMC transitions per datapoint and visit."""
    n_leapfrog: int = 10
    """Leapfrog steps per HMC transition."""
    step_size: float = 0.1
    """Initial HMC step size of every datapoint."""
    target_accept: float = 0.9
    """Acceptance rate the step sizes adapt toward."""
    adapt_rate: float = 0.1
    """ε ← ε·exp(adapt_rate·(acceptance − target_accept)) after each transition."""
    seed: int = 0
    """Seeds the data order, the initial chain states and the HMC draws."""
    time_limit: float | None = None
    """Wall-clock budget in seconds: stop after the first epoch that ends past it."""


def check_options(o: MCEMOptions) -> None:
    """Raise :class:`VarbayesError` naming the first bad option."""
    check(o.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got "
                                     f"{o.optimizer!r}")
    for name in ("epochs", "batch_size", "m_steps", "hmc_steps", "n_leapfrog"):
        value = getattr(o, name)
        check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got "
                                                     f"{value!r}")
    for name in ("lr", "step_size", "adapt_rate"):
        value = getattr(o, name)
        check(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value}")
    check(0 < o.target_accept < 1, f"target_accept must be in (0, 1), got {o.target_accept}")
    check(o.time_limit is None or o.time_limit > 0,
          f"time_limit must be > 0, got {o.time_limit}")


class MCEMState(NamedTuple):
    """What the next minibatch visit needs."""

    free: dict[str, Any]
    """θ, unconstrained (a positive scale as its log): what the optimizer steps."""
    opt_state: Any
    """The optimizer's state."""
    z: Any
    """(N, d) each datapoint's chain state, its latents flattened."""
    step_size: Any
    """(N,) each datapoint's HMC step size."""


def _optimizer(o: MCEMOptions) -> Any:
    import optax

    if o.optimizer == "adam":
        return optax.adam(o.lr)
    return optax.adagrad(o.lr, initial_accumulator_value=0.0, eps=1e-10)


def _model_parts(model: Callable[..., None], args: tuple, seed: int
                 ) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, tuple[int, ...]]]]:
    """The model's initial params, unconstrained, with the bijections to their constrained
    values, and its latent sites (name, per-datapoint shape)."""
    from numpyro import handlers
    from numpyro.distributions import constraints
    from numpyro.distributions.transforms import biject_to

    tr = handlers.trace(handlers.seed(model, seed)).get_trace(*args)
    sites = {n: s for n, s in tr.items() if s["type"] == "param"}
    check(bool(sites), "the model has no param site: Monte Carlo EM learns θ, the model's "
                       "params (numpyro.param or a module)")
    bijections = {n: biject_to(s["kwargs"].get("constraint", constraints.real))
                  for n, s in sites.items()}
    free = {n: bijections[n].inv(s["value"]) for n, s in sites.items()}
    return free, bijections, latent_sites(tr.values(), "data")


def mcem(model: Callable[..., None], data: Sequence[Any], *, options: MCEMOptions,
         transform: Transform | None = None, checkpoint: str | Path | None = None,
         resume: bool = False, meta: Mapping[str, Any] | None = None,
         export: Callable[[dict[str, Any]], Mapping[str, np.ndarray]] | None = None
         ) -> FitResult:
    """Learn the params θ of ``model`` by Monte Carlo EM with an HMC E-step.

    Parameters
    ----------
    model : a NumPyro model ``(*batch, n_data=N)`` whose per-datapoint latents and
        observations sit in a plate named ``"data"`` (size ``n_data``, subsample the batch), as
        :func:`varbayes.inference.vi.svi.fit` needs; latents real-valued.
    data : one per-datapoint array (N, ...) or a tuple of them.
    transform, checkpoint, resume, meta, export : as for :func:`~varbayes.inference.vi.svi.fit`
        (the checkpoint adds the chain states and step sizes).

    Returns a :class:`~varbayes.inference.vi.svi.FitResult`; ``history`` has ``objective``
    (log p_θ(x, z) per datapoint, nats), ``accept``, ``step_size`` and ``seconds``.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    check_backend(options.backend)
    check(options.backend == "numpyro", f"Monte Carlo EM runs on NumPyro models only, got "
                                        f"backend {options.backend!r}: pass the model's "
                                        "NumPyro twin")
    check_options(options)
    arrays = tuple(data) if not hasattr(data, "shape") else (data,)
    sizes = {len(a) for a in arrays if a is not None}
    check(len(sizes) == 1, f"data arrays must share their first dimension, got {sorted(sizes)}")
    N = sizes.pop()
    M = min(options.batch_size, N)
    meta = dict(meta or {})
    train_model = bind_n_data(model, N)
    first = to_backend(tuple(a if a is None else a[:M] for a in arrays), "numpyro")
    free0, bijections, sites = _model_parts(train_model, first, options.seed)
    tx = _optimizer(options)

    def constrain(free: dict) -> dict:
        """θ from the unconstrained values the optimizer steps (as fit's optimizers do)."""
        return {n: bijections[n](v) for n, v in free.items()}

    def per_row(free: dict, z: Any, args: tuple) -> Any:
        """log p_θ(x_i, z_i) per datapoint, z (C, M, d) -> (C, M), unscaled."""
        from numpyro import handlers

        params = constrain(free)

        def one(zc: Any) -> Any:
            fn = handlers.substitute(handlers.seed(train_model, 0),
                                     data={**params, **unflatten(zc, sites)})
            tr = handlers.trace(fn).get_trace(*args)
            prior, rest = split_terms(tr.values(), "data", [n for n, _ in sites],
                                      numpyro_reduce)
            return prior + rest

        return jax.vmap(one)(z)

    def neg_joint(free: dict, z: Any, args: tuple) -> Any:
        """−log p_θ(x, z) of the minibatch with the data plate's N/M scale, nats (seeded:
        a plate may draw its subsample indices)."""
        from numpyro import handlers

        lp, _ = log_density(handlers.seed(train_model, 0), args, {},
                            {**constrain(free), **unflatten(z, sites)})
        return -lp

    def visit(state: MCEMState, key: Any, idx: Any, *args: Any) -> tuple[MCEMState, Any, Any]:
        z, eps = state.z[idx][None], state.step_size[idx][None]  # (1, M, d), (1, M)

        def transition(carry: tuple[Any, Any], k: Any) -> tuple[tuple[Any, Any], Any]:
            z, eps = carry
            z, a = hmc_step(k, z, eps, lambda q: per_row(state.free, q, args),
                            options.n_leapfrog)
            eps = jnp.clip(eps * jnp.exp(options.adapt_rate * (a - options.target_accept)),
                           1e-5, 10.0)
            return (z, eps), a

        (z, eps), accept = jax.lax.scan(transition, (z, eps),
                                        jax.random.split(key, options.hmc_steps))
        z, eps = z[0], eps[0]
        loss0 = neg_joint(state.free, z, args)

        def m_step(carry: tuple[dict, Any], _: Any) -> tuple[tuple[dict, Any], None]:
            params, opt_state = carry
            grads = jax.grad(neg_joint)(params, z, args)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (jax.tree_util.tree_map(jnp.add, params, updates), opt_state), None

        (free, opt_state), _ = jax.lax.scan(m_step, (state.free, state.opt_state), None,
                                              length=options.m_steps)
        new = MCEMState(free, opt_state, state.z.at[idx].set(z),
                        state.step_size.at[idx].set(eps))
        return new, loss0, accept.mean()

    update = jax.jit(visit, donate_argnums=0)
    start, history = 0, {"objective": [], "seconds": [], "accept": [], "step_size": []}
    z0 = _initial_states(train_model, arrays, sites, options, M)
    state = MCEMState(free0, tx.init(free0), z0,
                      jnp.full((N,), options.step_size, jnp.float32))
    state = jax.tree_util.tree_map(jnp.copy, state)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    if resume:
        check(checkpoint is not None, "--resume needs a checkpoint path")
        saved, header = load_checkpoint(checkpoint)  # type: ignore[arg-type]
        check_compatible(header, options, meta, checkpoint)  # type: ignore[arg-type]
        shapes = [tuple(np.shape(v)) for v in leaves]
        check(int(header.get("n_leaves", -1)) == len(leaves)
              and [tuple(saved[f"state/{i}"].shape) for i in range(len(leaves))] == shapes,
              f"checkpoint {checkpoint} holds another model's state or another data size: "
              "use the original model and data, or a new --out")
        state = jax.tree_util.tree_unflatten(
            treedef, [jnp.asarray(saved[f"state/{i}"]) for i in range(len(leaves))])
        start, history = int(header["epoch"]), {k: list(v) for k, v in
                                                header["history"].items()}
    holder: dict[str, Any] = {"state": state, "accept": []}
    data_ix = (*arrays, np.arange(N))

    def step(batch: tuple) -> Any:
        *args, idx = batch
        key = jax.random.fold_in(holder["key"], holder["count"])
        holder["count"] += 1
        holder["state"], loss, accept = update(holder["state"], key, jnp.asarray(idx),
                                               *to_backend(tuple(args), "numpyro"))
        holder["accept"].append(accept)
        return loss

    def begin_epoch(epoch: int) -> None:
        holder["key"] = jax.random.PRNGKey(_epoch_seed(options.seed, epoch))
        holder["count"], holder["accept"] = 0, []

    def evaluate(epoch: int) -> dict[str, float]:
        return {"accept": float(np.mean([float(a) for a in holder["accept"]])),
                "step_size": float(np.median(np.asarray(holder["state"].step_size)))}

    def save(epoch: int, hist: dict[str, list[float]]) -> None:
        leaves = jax.tree_util.tree_leaves(holder["state"])
        out = {f"state/{i}": np.asarray(v) for i, v in enumerate(leaves)}
        if export is not None:
            out.update({f"export/{k}": np.asarray(v)
                        for k, v in export(constrain(holder["state"].free)).items()})
        save_checkpoint(checkpoint, out, make_header(options, meta, epoch, hist,
                                                     n_leaves=len(leaves)))

    def with_index(batch: tuple, rng: np.random.Generator) -> tuple:
        *args, idx = batch
        return (*transform(tuple(args), rng), idx)

    done = run_epochs(options, N, data_ix, None if transform is None else with_index, start,
                      history, step, begin_epoch, evaluate, save,
                      None if checkpoint is None else Path(checkpoint), first_nonfinite)
    params = constrain(holder["state"].free)
    return FitResult(params, history, done, start,
                     int(sum(np.size(v) for v in jax.tree_util.tree_leaves(params))))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0])


def _initial_states(model: Callable[..., None], arrays: tuple, sites: list, o: MCEMOptions,
                    M: int) -> Any:
    """(N, d) chain starts: each datapoint's latents drawn from the model's prior."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    N = len(next(a for a in arrays if a is not None))
    out = []
    for j, i in enumerate(range(0, N, M)):
        args = to_backend(tuple(a if a is None else a[i:i + M] for a in arrays), "numpyro")
        tr = handlers.trace(handlers.seed(model, jax.random.PRNGKey(o.seed + 1 + j))
                            ).get_trace(*args)
        out.append(flatten({n: tr[n]["value"] for n, _ in sites}, sites, 1))
    return jnp.concatenate(out).astype(jnp.float32)
