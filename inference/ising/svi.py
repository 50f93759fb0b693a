"""SVI for the mean-field Ising guide, in Pyro and in NumPyro, with two losses.

- ``closed``: the exact mean-field ELBO, computed in closed form from the guide's logits
  (:func:`varbayes.models.ising.energy.elbo_from_logits`) and the model's likelihood. Its
  gradient is exact, so Adam converges to a CAVI fixed point.
- ``score``: the generic Monte-Carlo ELBO with score-function (REINFORCE) gradients for the
  discrete ``z``: Pyro ``Trace_ELBO``, NumPyro ``TraceGraph_ELBO`` (NumPyro's ``Trace_ELBO``
  drops the score term for discrete sites). Unbiased but noisy; for small grids.

Both fits start from the guide's data-driven logits ``2h`` unless ``init_logits`` is given,
and record the closed-form ELBO (nats) after every step.
"""

from __future__ import annotations

import time

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.inference.ising.results import PosteriorResult, mpm
from varbayes.models.errors import check
from varbayes.models.ising.energy import Couplings, Posterior, elbo_from_logits, to_backend
from varbayes.models.ising.noise import Noise, make_posterior

LOSSES = ("closed", "score")


def _result(method: str, logits: np.ndarray, post: Posterior, history: list[float] | np.ndarray,
            steps: int, seconds: float) -> PosteriorResult:
    mean = np.tanh(0.5 * logits)
    return PosteriorResult(
        method=method, mean=mean, estimate=mpm(mean),
        elbo=float(elbo_from_logits(logits, post)), log_evidence=float("nan"),
        history=np.asarray(history, dtype=np.float64), history_label="ELBO (nats)",
        iterations=steps, seconds=seconds)


def _check(loss: str, steps: int, lr: float, num_particles: int) -> None:
    check(loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    check(steps >= 1, f"--iters must be >= 1, got {steps}")
    check(bool(np.isfinite(lr)) and lr > 0, f"--lr must be > 0, got {lr}")
    check(num_particles >= 1, f"--particles must be >= 1, got {num_particles}")


# --------------------------------------------------------------------------------- Pyro


class PyroClosedFormELBO:
    """Pyro loss ``(model, guide, *args) -> −ELBO``, exact, from the guide's ``z`` logits."""

    def __call__(self, model, guide, observed, couplings: Couplings, noise: Noise):
        from pyro import poutine

        from varbayes.models.ising import pyro_model

        guide_trace = poutine.trace(guide).get_trace(observed, couplings, noise)
        logits = guide_trace.nodes["z"]["fn"].base_dist.logits  # (H, W)
        field = pyro_model.local_field(observed, noise)
        return -elbo_from_logits(logits, Posterior(couplings, field))


def fit_pyro(
    observed: np.ndarray, noise: Noise, J, *, loss: str = "closed", steps: int = 500,
    lr: float = 0.05, num_particles: int = 1, seed: int = 0,
    init_logits: np.ndarray | None = None,
) -> PosteriorResult:
    """Fit the mean-field guide with Pyro SVI and Adam (float64 torch).

    Parameters
    ----------
    observed : (H, W) noisy image; ``noise``, ``J`` as in :func:`make_posterior`.
    loss : ``"closed"`` (exact ELBO) or ``"score"`` (``Trace_ELBO``, vectorized particles).
    steps, lr, num_particles : optimizer steps, Adam step size, Monte-Carlo particles.
    seed : seeds Pyro's RNG (only the score loss draws samples).
    """
    import pyro
    import torch

    from varbayes.models.ising import pyro_model

    _check(loss, steps, lr, num_particles)
    post = make_posterior(observed, noise, J)
    tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    post_t = to_backend(post, tensor)
    args = (tensor(observed), post_t.couplings, noise)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    if init_logits is not None:
        pyro.param("logits", tensor(init_logits))
    elbo = (PyroClosedFormELBO() if loss == "closed" else
            pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=True,
                                  max_plate_nesting=0))
    svi = pyro.infer.SVI(pyro_model.model, pyro_model.guide, pyro.optim.Adam({"lr": lr}), elbo)
    t0 = time.perf_counter()
    pyro_model.guide(*args)  # create the parameter before reading the start value
    logits = pyro.param("logits")
    history = [float(elbo_from_logits(logits.detach().numpy(), post))]
    for _ in range(steps):
        svi.step(*args)
        history.append(float(elbo_from_logits(logits.detach().numpy(), post)))
    seconds = time.perf_counter() - t0
    method = "svi" if loss == "closed" else "svi-score"
    return _result(method, logits.detach().numpy().copy(), post, history, steps, seconds)


# ------------------------------------------------------------------------------ NumPyro


def _numpyro_closed_form_elbo():
    import numpyro
    from numpyro import handlers

    from varbayes.models.ising import numpyro_model

    class NumPyroClosedFormELBO(numpyro.infer.elbo.ELBO):
        """NumPyro loss: exact ``−ELBO`` from the guide's ``z`` logits (no sampling)."""

        can_infer_discrete = True  # the expectation over z is done in closed form

        def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
            seeded = handlers.seed(handlers.substitute(guide, data=param_map), rng_key)
            guide_trace = handlers.trace(seeded).get_trace(*args, **kwargs)
            logits = guide_trace["z"]["fn"].base_dist.logits  # (H, W)
            observed, couplings = args
            field = numpyro_model.local_field(observed, kwargs["noise"])
            return {"loss": -elbo_from_logits(logits, Posterior(couplings, field)),
                    "mutable_state": None}

    return NumPyroClosedFormELBO()


def fit_numpyro(
    observed: np.ndarray, noise: Noise, J, *, loss: str = "closed", steps: int = 500,
    lr: float = 0.05, num_particles: int = 1, seed: int = 0,
    init_logits: np.ndarray | None = None,
) -> PosteriorResult:
    """Fit the mean-field guide with NumPyro SVI and Adam (float32 JAX, one jitted scan).

    Same parameters as :func:`fit_pyro`; the score loss is ``TraceGraph_ELBO``.
    """
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, TraceGraph_ELBO

    from varbayes.models.ising import numpyro_model

    _check(loss, steps, lr, num_particles)
    post = make_posterior(observed, noise, J)
    post_j = to_backend(post, lambda a: jnp.asarray(a, dtype=jnp.float32))
    args = (jnp.asarray(observed, dtype=jnp.float32), post_j.couplings)
    elbo = (_numpyro_closed_form_elbo() if loss == "closed"
            else TraceGraph_ELBO(num_particles=num_particles))
    svi = SVI(numpyro_model.model, numpyro_model.guide, numpyro.optim.Adam(lr), elbo,
              noise=noise)
    key = jax.random.key(seed)
    init_params = None if init_logits is None else {"logits": jnp.asarray(init_logits)}
    state = svi.init(key, *args, init_params=init_params)

    @jax.jit
    def run(state):
        def body(state, _):
            state, _ = svi.update(state, *args)
            return state, elbo_from_logits(svi.get_params(state)["logits"], post_j)

        return jax.lax.scan(body, state, None, length=steps)

    t0 = time.perf_counter()
    start = float(elbo_from_logits(np.asarray(svi.get_params(state)["logits"], np.float64), post))
    state, trace = run(state)
    logits = np.asarray(svi.get_params(state)["logits"], dtype=np.float64)
    seconds = time.perf_counter() - t0
    method = "svi" if loss == "closed" else "svi-score"
    return _result(method, logits, post, [start, *np.asarray(trace).tolist()], steps, seconds)


def fit(backend: str, *args, **kwargs) -> PosteriorResult:
    """Dispatch to :func:`fit_numpyro` or :func:`fit_pyro`."""
    check_backend(backend, "--backend")
    return (fit_numpyro if backend == "numpyro" else fit_pyro)(*args, **kwargs)
