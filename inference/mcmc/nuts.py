"""NUTS posterior sampling for any model, in NumPyro (default) or Pyro, as arviz InferenceData.

:func:`nuts` returns an :class:`arviz.InferenceData` with the groups ``posterior``,
``sample_stats`` (``diverging``, ``tree_depth``, ``step_size``, ``energy``, ...),
``log_likelihood`` (pointwise, for LOO) and ``observed_data`` of the observed sites only, and
``posterior_predictive``, ``prior`` and ``prior_predictive``
(:mod:`varbayes.inference.workflow.predictive`), with the same dimension names in both
backends. Chains run sequentially on
CPU and in parallel, one per device, when at least ``num_chains`` > 1 devices are visible
(NumPyro: e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` on a CPU). Models with
discrete latent sites are refused: NUTS needs continuous latents; use the Gibbs route
(:mod:`varbayes.inference.ising.gibbs`, or NumPyro's ``DiscreteHMCGibbs``) for those.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.inference.ppl import (
    Site,
    check_model,
    isolated,
    latent,
    to_backend,
    with_params,
)
from varbayes.inference.workflow.predictive import (
    IMPLEMENTATIONS,
    pointwise_groups,
    to_inferencedata,
)
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
    params: Mapping[str, Any] | None = None,
    predictive: bool = True,
    prior_samples: int | None = None,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    **kwargs: Any,
):
    """Sample the posterior of ``model(*args, **kwargs)`` with NUTS.

    Parameters
    ----------
    model : a NumPyro or Pyro model (matching ``backend``; a model of the other backend is
        refused); numpy arrays in ``args`` / ``kwargs`` are converted.
    backend : ``"numpyro"`` (default) or ``"pyro"``.
    num_chains, num_warmup, num_samples : chains, adaptation steps and kept draws per chain.
    seed : the random seed; chain ``c`` of the Pyro backend uses ``seed + c``.
    target_accept_prob : dual-averaging target for the step size, in (0, 1).
    max_tree_depth : the largest trajectory is ``2**max_tree_depth - 1`` leapfrog steps.
    init : optional initial values per latent site (e.g. an SVI solution's posterior
        means), in the constrained space.
    jit_compile : Pyro only: compile the potential energy with the PyTorch JIT.
    progress_bar : show a progress bar.
    params : values of the model's param sites (constrained, e.g. ``fit(...).params``;
        names that are not param sites of the model are ignored); None: the values the
        model creates itself.
    predictive : also draw the ``posterior_predictive`` (one y per draw), ``prior`` and
        ``prior_predictive`` groups (``prior_samples`` draws, default ``num_samples``).
    coords, dims : passed to arviz; ``dims`` entries replace the inferred dimension names
        (a plate's name where a plate stands, else ``<site>_dim_<i>``, in both backends).

    Returns
    -------
    arviz.InferenceData with chains along ``chain`` and draws along ``draw``: ``posterior``,
    ``sample_stats`` (``diverging``, ``tree_depth``, ``step_size``, ``energy``, ``lp``),
    ``log_likelihood`` and ``observed_data`` of the observed sites only, and the predictive
    groups. ``attrs["chain_method"]`` says whether the chains ran ``parallel`` or
    ``sequential``.
    """
    check_backend(backend)
    check(int(num_samples) >= 1, f"num_samples must be >= 1, got {num_samples}")
    check(int(num_warmup) >= 0, f"num_warmup must be >= 0, got {num_warmup}")
    check(int(num_chains) >= 1, f"num_chains must be >= 1, got {num_chains}")
    check(0.0 < target_accept_prob < 1.0,
          f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
    check(int(max_tree_depth) >= 1, f"max_tree_depth must be >= 1, got {max_tree_depth}")
    check(prior_samples is None or int(prior_samples) >= 0,
          f"prior_samples must be >= 0, got {prior_samples}")
    run = _nuts_numpyro if backend == "numpyro" else _nuts_pyro
    impl = IMPLEMENTATIONS[backend]
    args, kwargs = to_backend(tuple(args), backend), to_backend(dict(kwargs), backend)
    with isolated(backend):
        sites = check_model(model, args, kwargs, backend=backend)
        # names that are no param site of the model (a guide's) are ignored, so that
        # fit(...).params of a model+guide pair can be passed as it is
        model = with_params(model, params, backend=backend, sites=sites)
        _refuse_discrete(sites)
        posterior, stats, method = run(
            model, args, kwargs, num_chains=int(num_chains), num_warmup=int(num_warmup),
            num_samples=int(num_samples), seed=int(seed),
            target_accept_prob=float(target_accept_prob),
            max_tree_depth=int(max_tree_depth), init=init, jit_compile=jit_compile,
            progress_bar=progress_bar)
        groups = pointwise_groups(model, sites, posterior, args, kwargs, impl=impl,
                                  seed=int(seed), predictive=predictive,
                                  prior_samples=int(num_samples if prior_samples is None
                                                    else prior_samples))
    idata = to_inferencedata(sites, posterior, sample_stats=stats, **groups, coords=coords,
                             dims=dims)
    idata.attrs["chain_method"] = method
    return idata


def chain_metrics(idata: Any) -> dict[str, Any]:
    """``chain_method`` (``parallel``: one chain per JAX device, NumPyro's pmap; else
    ``sequential``) and ``devices``, the devices the chains of :func:`nuts`'s ``idata`` ran
    on, for a ``metrics.json``."""
    method = idata.attrs.get("chain_method", "sequential")
    chains = int(idata.posterior.sizes["chain"])
    return {"chain_method": method, "devices": chains if method == "parallel" else 1}


def discrete_latent_sites(sites: Sequence[Site]) -> list[str]:
    """Names of the latent sample sites with discrete support among ``sites``."""
    return [s.name for s in latent(sites) if s.discrete]


def _refuse_discrete(sites: Sequence[Site]) -> None:
    names = discrete_latent_sites(sites)
    if names:
        raise VarbayesError(
            f"NUTS needs continuous latents, but site(s) {', '.join(names)} are discrete: "
            "sample them with Gibbs instead (NumPyro's DiscreteHMCGibbs; for the Ising model, "
            "varbayes.inference.ising.gibbs)")


#: NumPyro's extra fields -> arviz's sample_stats names (as ``az.from_numpyro`` has them).
_NUMPYRO_STATS = {"diverging": "diverging", "num_steps": "n_steps", "energy": "energy",
                  "adapt_state.step_size": "step_size", "accept_prob": "acceptance_rate",
                  "potential_energy": "lp"}


def _nuts_numpyro(model, args, kwargs, *, num_chains, num_warmup, num_samples, seed,
                  target_accept_prob, max_tree_depth, init, jit_compile, progress_bar):
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_uniform, init_to_value

    strategy = init_to_value(values=dict(init)) if init else init_to_uniform
    kernel = NUTS(model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                  init_strategy=strategy)
    # NumPyro's "parallel" is one chain per device (pmap); a single chain runs as it is
    method = ("parallel" if 1 < num_chains <= jax.local_device_count() else "sequential")
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=method, progress_bar=progress_bar)
    mcmc.run(jax.random.key(seed), *args, extra_fields=tuple(_NUMPYRO_STATS), **kwargs)
    posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    fields = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_NUMPYRO_STATS[k]: np.asarray(v) for k, v in fields.items()}
    stats["lp"] = -stats["lp"]
    stats["tree_depth"] = np.log2(stats["n_steps"]).astype(int) + 1
    return posterior, stats, method


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
    import pyro
    import torch
    from pyro.infer import MCMC
    from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

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
    return posterior, sample_stats, "sequential"
