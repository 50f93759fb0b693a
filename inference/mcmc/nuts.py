"""NUTS posterior sampling for any model, in NumPyro (default) or Pyro, as arviz InferenceData.

:func:`nuts` returns an :class:`arviz.InferenceData` with the groups ``posterior``,
``sample_stats`` (``diverging``, ``tree_depth``, ``step_size``, ``energy``, ...),
``log_likelihood`` (pointwise, for LOO) and ``observed_data``. Chains run sequentially on
CPU and in parallel when at least ``num_chains`` devices are visible (NumPyro). Models with
discrete latent sites are refused: NUTS needs continuous latents; use the Gibbs route
(:mod:`varbayes.inference.ising.gibbs`, or NumPyro's ``DiscreteHMCGibbs``) for those.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.models.errors import VarbayesError, check

Backend = str  # "numpyro" | "pyro"


def nuts(
    model: Callable[..., Any],
    *args: Any,
    backend: Backend = "numpyro",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    init: Mapping[str, Any] | None = None,
    jit_compile: bool = True,
    progress_bar: bool = True,
    **kwargs: Any,
):
    """Sample the posterior of ``model(*args, **kwargs)`` with NUTS.

    Parameters
    ----------
    model : a NumPyro or Pyro model (matching ``backend``); its observed sites give the
        ``log_likelihood`` and ``observed_data`` groups.
    backend : ``"numpyro"`` (default) or ``"pyro"``.
    num_chains, num_warmup, num_samples : chains, adaptation steps and kept draws per chain.
    seed : the random seed; chain ``c`` of the Pyro backend uses ``seed + c``.
    target_accept_prob : dual-averaging target for the step size, in (0, 1).
    max_tree_depth : the largest trajectory is ``2**max_tree_depth - 1`` leapfrog steps.
    init : optional initial values per latent site (e.g. an SVI solution's posterior
        means), in the constrained space.
    jit_compile : Pyro only: compile the potential energy with the PyTorch JIT.
    progress_bar : show a progress bar.

    Returns
    -------
    arviz.InferenceData with chains along ``chain`` and draws along ``draw``.
    """
    check_backend(backend)
    check(int(num_samples) >= 1, f"num_samples must be >= 1, got {num_samples}")
    check(int(num_warmup) >= 0, f"num_warmup must be >= 0, got {num_warmup}")
    check(int(num_chains) >= 1, f"num_chains must be >= 1, got {num_chains}")
    check(0.0 < target_accept_prob < 1.0,
          f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
    check(int(max_tree_depth) >= 1, f"max_tree_depth must be >= 1, got {max_tree_depth}")
    run = _nuts_numpyro if backend == "numpyro" else _nuts_pyro
    return run(model, args, kwargs, num_chains=int(num_chains), num_warmup=int(num_warmup),
               num_samples=int(num_samples), seed=int(seed),
               target_accept_prob=float(target_accept_prob),
               max_tree_depth=int(max_tree_depth), init=init, jit_compile=jit_compile,
               progress_bar=progress_bar)


def discrete_latent_sites(sites: Any) -> list[str]:
    """Names of the latent (unobserved) sample sites with discrete support among a trace's
    sites (NumPyro's trace values or Pyro's ``trace.nodes.values()``)."""
    return [s["name"] for s in sites
            if s["type"] == "sample" and not s.get("is_observed", False)
            and getattr(getattr(s["fn"], "support", None), "is_discrete", False)]


def _refuse_discrete(sites: Any) -> None:
    names = discrete_latent_sites(sites)
    if names:
        raise VarbayesError(
            f"NUTS needs continuous latents, but site(s) {', '.join(names)} are discrete: "
            "sample them with Gibbs instead (NumPyro's DiscreteHMCGibbs; for the Ising model, "
            "varbayes.inference.ising.gibbs)")


def _nuts_numpyro(model, args, kwargs, *, num_chains, num_warmup, num_samples, seed,
                  target_accept_prob, max_tree_depth, init, jit_compile, progress_bar):
    import arviz as az
    import jax
    from numpyro import handlers
    from numpyro.infer import MCMC, NUTS, init_to_uniform, init_to_value

    _refuse_discrete(handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs).values())
    strategy = init_to_value(values=dict(init)) if init else init_to_uniform
    kernel = NUTS(model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                  init_strategy=strategy)
    method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=method, progress_bar=progress_bar)
    mcmc.run(jax.random.key(seed), *args,
             extra_fields=("diverging", "num_steps", "energy", "adapt_state.step_size",
                           "accept_prob", "potential_energy"), **kwargs)
    return az.from_numpyro(mcmc)


def _recording_pyro_nuts():
    """A Pyro NUTS kernel that also records tree depth and the Hamiltonian per draw."""
    from pyro.infer.mcmc import NUTS

    class RecordingNUTS(NUTS):
        def sample(self, params):
            self.last_depth = -1
            self.last_energy = float("nan")
            return super().sample(params)

        def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
            # Top-level calls carry the doubling index; recursive calls carry smaller ones.
            self.last_depth = max(self.last_depth, tree_depth)
            self.last_energy = float(energy_current)
            return super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth,
                                       energy_current)

    return RecordingNUTS


def _nuts_pyro(model, args, kwargs, *, num_chains, num_warmup, num_samples, seed,
               target_accept_prob, max_tree_depth, init, jit_compile, progress_bar):
    import arviz as az
    import pyro
    import torch
    from pyro.infer import MCMC
    from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

    _refuse_discrete(pyro.poutine.trace(model).get_trace(*args, **kwargs).nodes.values())
    dtype = torch.get_default_dtype()
    strategy = (init_to_value(values={k: torch.as_tensor(np.asarray(v), dtype=dtype)
                                      for k, v in init.items()}) if init else init_to_uniform)
    chains, stats = [], []
    for c in range(num_chains):
        pyro.set_rng_seed(seed + c)
        kernel = _recording_pyro_nuts()(model, target_accept_prob=target_accept_prob,
                                        max_tree_depth=max_tree_depth, jit_compile=jit_compile,
                                        ignore_jit_warnings=True, init_strategy=strategy)
        rec: dict[str, list[float]] = {"tree_depth": [], "energy": [], "step_size": [],
                                       "lp": []}

        def hook(kern, _samples, stage, _i, rec=rec):
            if stage == "Sample":
                rec["tree_depth"].append(kern.last_depth + 1)
                rec["energy"].append(kern.last_energy)
                rec["step_size"].append(float(kern.step_size))
                rec["lp"].append(-float(kern._potential_energy_last))

        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=1,
                    disable_progbar=not progress_bar, hook_fn=hook)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            mcmc.run(*args, **kwargs)
        chains.append({k: v.detach().cpu().numpy()
                       for k, v in mcmc.get_samples(group_by_chain=True).items()})
        div = np.zeros(num_samples, dtype=bool)
        div[np.asarray(kernel._divergences, dtype=int)] = True
        stats.append({**{k: np.asarray(v) for k, v in rec.items()}, "diverging": div})
    posterior = {k: np.concatenate([c[k] for c in chains]) for k in chains[0]}
    sample_stats = {k: np.stack([s[k] for s in stats]) for k in stats[0]}
    loglik, observed = _pyro_log_likelihood(model, posterior, args, kwargs)
    return az.from_dict(posterior=posterior, sample_stats=sample_stats,
                        log_likelihood=loglik or None, observed_data=observed or None)


def _pyro_log_likelihood(model, posterior: dict[str, np.ndarray], args, kwargs
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pointwise log-likelihood of each observed site, (chain, draw, *batch), and the data.

    Replays the model conditioned on every draw. This avoids Pyro's vectorized trace,
    which cannot broadcast vector-valued latents under a plate.
    """
    import pyro
    import torch

    n_chain, n_draw = next(iter(posterior.values())).shape[:2]
    values = {k: torch.as_tensor(v, dtype=torch.get_default_dtype())
              for k, v in posterior.items()}
    out: dict[str, list] = {}
    observed: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for c in range(n_chain):
            for d in range(n_draw):
                draw = {k: v[c, d] for k, v in values.items()}
                tr = pyro.poutine.trace(pyro.condition(model, data=draw)).get_trace(
                    *args, **kwargs)
                for name, site in tr.nodes.items():
                    if site["type"] == "sample" and site["is_observed"]:
                        lp = site["fn"].log_prob(site["value"])
                        out.setdefault(name, []).append(lp.detach().cpu().numpy())
                        observed[name] = site["value"].detach().cpu().numpy()
    loglik = {k: np.stack(v).reshape(n_chain, n_draw, *v[0].shape) for k, v in out.items()}
    return loglik, observed
