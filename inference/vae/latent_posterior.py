"""The latent posterior p(z|x) of a trained VAE run by NUTS, against the encoder's q_φ(z|x)
and the best per-datapoint Gaussian q*: what ``varbayes mcmc --target latent`` and
``varbayes compare`` compute.

NUTS runs in the run's own backend (:func:`sample_latent`); the gaps, grids and KL
divergences (:mod:`.amortization`) use the run's NumPyro twin with the
same weights. Both the NUTS draws and independent draws of q_φ become InferenceData with the
same pointwise log-likelihood log p(x_i | z_i), so arviz compares like with like.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.io import save_inferencedata
from varbayes.inference.mcmc.nuts import nuts
from varbayes.inference.vae import amortization as am
from varbayes.inference.vae.run import Run, heldout_arrays, model_arrays, numpyro_twin
from varbayes.inference.workflow.diagnostics import (
    Q_KHAT_MIN_DRAWS,
    QCheck,
    from_draws,
    gate,
    plot_diagnostics,
    q_khat,
)


class LatentAnalysis(NamedTuple):
    """Everything the latent target computes for one run."""

    idata: Any
    """NUTS InferenceData: ``z`` (chain, draw, M, K), pointwise log p(x_i|z_i)."""
    svi: Any
    """Draws of the encoder's q_φ(z|x) as InferenceData (same shape, same log-likelihood)."""
    gaps: am.GapReport
    """Evidence, ELBOs and the amortization gap per image."""
    q_checks: dict[str, QCheck]
    """The PSIS k̂ of q_φ (``SVI q_φ``) and of q* (``q*``) per image (Yao et al. 2018)."""
    grid: am.Grid | None
    """The exact posterior on a grid (latent size ≤ 2), else None."""
    metrics: dict[str, Any]
    """Flat ``metrics.json`` keys (nats per image, seconds)."""


def sample_latent(run: Run, x: np.ndarray, c: np.ndarray | None = None, **nuts_kwargs: Any):
    """NUTS draws of p(z|x) under a trained run's decoder, in the run's own backend.

    ``x`` (M, D) and ``c`` (M, C) or None; ``nuts_kwargs`` go to
    :func:`varbayes.inference.mcmc.nuts.nuts` (Pyro runs without the PyTorch JIT unless
    ``jit_compile=True`` is passed: it traces x.shape[0] as a tensor, which breaks the
    model's shapes). Returns InferenceData with ``z`` (chain, draw, M, K) and the pointwise
    log p(x_i|z_i).
    """
    if run.backend == "pyro":
        nuts_kwargs.setdefault("jit_compile", False)
    return nuts(run.mod.model, run.vae, *model_arrays(run.backend, x, c), backend=run.backend,
                **nuts_kwargs)


def guide_draws(mean: np.ndarray, scale: np.ndarray, chains: int, draws: int, seed: int
                ) -> np.ndarray:
    """Independent draws (chain, draw, M, K) of diagonal Gaussians N(mean, scale²)."""
    rng = np.random.default_rng(seed)
    return mean + scale * rng.standard_normal((chains, draws, *mean.shape))


def pointwise_loglik(run: Run, x: np.ndarray, c: np.ndarray | None, z: np.ndarray
                     ) -> np.ndarray:
    """Σ_d log p(x_id | z_i), (chain, draw, M), at latent draws z (chain, draw, M, K)."""
    ll = run.mod.log_likelihood(run.vae, x, z.astype(np.float32), c)  # (chain, draw, M, D)
    return np.asarray(ll, np.float64).sum(-1)


def analyse_latent(run: Run, n_data: int, *, chains: int, warmup: int, samples: int,
                   seed: int, progress_bar: bool, opt_steps: int = 1000) -> LatentAnalysis:
    """NUTS on p(z|x) for the first ``n_data`` test images; q_φ and q* against it."""
    import jax

    x, c = heldout_arrays(run, n_data)
    t0 = time.perf_counter()
    idata = sample_latent(run, x, c, num_chains=chains, num_warmup=warmup,
                          num_samples=samples, seed=seed, progress_bar=progress_bar)
    nuts_s = time.perf_counter() - t0
    lj = am.vae_log_joint(numpyro_twin(run), x, c)
    amortized = am.Gaussians(*(np.asarray(a, np.float64) for a in run.mod.encode(run.vae, x, c)))
    t0 = time.perf_counter()
    rep, grid = am.gaps(lj, amortized, steps=opt_steps, seed=seed)
    gap_s = time.perf_counter() - t0
    z = am.latent_draws(idata)
    ljd = np.asarray(jax.vmap(lj)(z.astype(np.float32)), np.float64)
    kl_a = am.kl_p_q(ljd, z, rep.amortized, rep.log_px)
    kl_o = am.kl_p_q(ljd, z, rep.optimal, rep.log_px)
    # q_φ draws with the same pointwise log-likelihood, so arviz compares like with like
    zq = guide_draws(rep.amortized.loc, rep.amortized.scale, chains, samples, seed + 7)
    svi = from_draws({"z": zq}, log_likelihood={"x": pointwise_loglik(run, x, c, zq)},
                     observed_data={"x": x})
    # is q good enough? the PSIS k̂ of p(x, z)/q(z|x) per image, from the same draws
    q_checks = {}
    for name, q, draws in (("SVI q_φ", rep.amortized, zq),
                           ("q*", rep.optimal, guide_draws(rep.optimal.loc, rep.optimal.scale,
                                                           chains, samples, seed + 8))):
        flat = draws.reshape(-1, *draws.shape[2:])
        ljq = np.asarray(jax.vmap(lj)(flat.astype(np.float32)), np.float64)
        q_checks[name] = _q_check(ljq - am.log_density(flat, q))
    g = gate(idata)
    nuts_mean = z.mean(0)
    nuts_sd = z.std(0)
    with np.errstate(divide="ignore", invalid="ignore"):  # one draw: no sd, the ratio is NaN
        sd_ratio = {q: np.where(nuts_sd > 0, getattr(rep, q).scale / nuts_sd, np.nan)
                    for q in ("amortized", "optimal")}
    metrics: dict[str, Any] = {
        "target": "latent", "backend": run.backend, "n_data": len(x),
        "latent": int(rep.amortized.loc.shape[1]), "chains": chains,
        "warmup": warmup, "samples": samples, "nuts_seconds": nuts_s, "gap_seconds": gap_s,
        "gate_passed": bool(g.passed), "max_rhat": g.max_rhat, "min_ess_bulk": g.min_ess_bulk,
        "divergences": g.divergences, "gate_failing": list(g.failing),
        "log_px": float(rep.log_px.mean()), "log_px_method": rep.log_px_method,
        "elbo_amortized": float(rep.elbo_amortized.mean()),
        "elbo_optimal": float(rep.elbo_optimal.mean()),
        "inference_gap": float(rep.inference_gap.mean()),
        "approximation_gap": float(rep.approximation_gap.mean()),
        "amortization_gap": float(rep.amortization_gap.mean()),
        "kl_p_q_amortized": float(kl_a.mean()), "kl_p_q_optimal": float(kl_o.mean()),
        "mean_abs_diff_mean_amortized": float(np.abs(rep.amortized.loc - nuts_mean).mean()),
        "mean_sd_ratio_amortized": float(sd_ratio["amortized"].mean()),
        "mean_abs_diff_mean_optimal": float(np.abs(rep.optimal.loc - nuts_mean).mean()),
        "mean_sd_ratio_optimal": float(sd_ratio["optimal"].mean()),
        "khat_q_amortized_max": float(q_checks["SVI q_φ"].khat.max()),
        "khat_q_amortized_mean": float(q_checks["SVI q_φ"].khat.mean()),
        "khat_q_optimal_max": float(q_checks["q*"].khat.max()),
        "khat_good_k": q_checks["SVI q_φ"].good_k,
    }
    if grid is not None:
        metrics["nuts_max_abs_err_mean_vs_grid"] = float(np.abs(nuts_mean - grid.mean).max())
        metrics["nuts_max_rel_err_sd_vs_grid"] = float(np.abs(nuts_sd / grid.sd - 1).max())
    return LatentAnalysis(idata, svi, rep, q_checks, grid, metrics)


def _q_check(log_weights: np.ndarray) -> QCheck:
    """:func:`q_khat` of (S, M) log weights, or NaN k̂ with a verdict that says why when
    there are too few draws (``--chains`` × ``--samples`` < 10) to fit a Pareto tail."""
    S, M = log_weights.shape
    if S >= Q_KHAT_MIN_DRAWS:
        return q_khat(log_weights)
    return QCheck(np.full(M, np.nan), math.nan, S,
                  f"not computed: k̂ needs at least {Q_KHAT_MIN_DRAWS} draws of q, got {S} "
                  "(--chains × --samples)")


def pair_coords(idata: Any) -> dict[str, list[int]]:
    """The pair plot shows the latents of the first two images (it grows with their square),
    or of the only one."""
    dim = idata.posterior["z"].dims[2]  # "data" (the NumPyro plate) or "z_dim_0"
    return {dim: list(range(min(2, idata.posterior.sizes[dim])))}


def write_latent_outputs(res: LatentAnalysis, out: Path, prefix: str = "") -> list[Path]:
    """``<prefix>posterior.nc``, the diagnostic plots and (latent size 2) the overlay plot."""
    paths = [save_inferencedata(res.idata, out / f"{prefix}posterior.nc")]
    paths += plot_diagnostics(res.idata, out, prefix=prefix, pair_coords=pair_coords(res.idata))
    if res.grid is not None and res.gaps.amortized.loc.shape[1] == 2:
        paths.append(am.plot_overlay(res.grid, am.latent_draws(res.idata), res.gaps, out,
                                     name=f"{prefix}latent_overlay.png"))
    return paths
