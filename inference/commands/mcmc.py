"""``varbayes mcmc RUN_DIR --target latent|weights``: NUTS on a trained run, with arviz.

``--target latent`` samples p(z|x) for the first ``--n-data`` test images under the run's
decoder (in the run's backend) and compares it with the encoder's q_φ(z|x) and the best
per-datapoint Gaussian q* (:mod:`inference.amortization`). ``--target weights`` is for a
Bayesian-decoder run (``vae train --bayesian``).

Writes ``posterior.nc`` (InferenceData, netCDF), ``metrics.json`` and the plots trace, rank,
pair, energy, forest (and ``latent_overlay.png`` for latent size 2).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from inference.errors import VarbayesError, check
from inference.io import out_dir, write_metrics

TARGETS = ("latent", "weights")
CHECKPOINT = "checkpoint.npz"


class LatentAnalysis(NamedTuple):
    """Everything the latent target computes for one run."""

    idata: Any
    """NUTS InferenceData: ``z`` (chain, draw, M, K), pointwise log p(x_i|z_i)."""
    svi: Any
    """Draws of the encoder's q_φ(z|x) as InferenceData (same shape, same log-likelihood)."""
    gaps: Any
    """:class:`inference.amortization.GapReport`."""
    grid: Any
    """The exact posterior on a grid (latent size ≤ 2), else None."""
    metrics: dict[str, Any]


def check_run_header(run_dir: Path) -> dict[str, Any]:
    """The checkpoint header of a run folder; one-line errors for the wrong kind of folder."""
    from inference.svi import load_checkpoint

    check(run_dir.is_dir(), f"run folder {run_dir} does not exist: pass the --out of a "
                            "'varbayes vae train' run")
    path = run_dir / CHECKPOINT
    check(path.is_file(), f"no {CHECKPOINT} in {run_dir}: pass the --out folder of a "
                          "'varbayes vae train' run")
    _, header = load_checkpoint(path)
    meta = header.get("meta", {})
    check("vae" in meta, f"{path} is not a VAE checkpoint: pass the --out of a "
                         "'varbayes vae train' run")
    return header


def is_bayesian(header: dict[str, Any]) -> bool:
    """True for a Bayesian-decoder run (a prior and a guide over the decoder weights)."""
    return "bayes" in header.get("meta", {})  # written by 'vae train --bayesian'


def guide_draws(mean: np.ndarray, scale: np.ndarray, chains: int, draws: int, seed: int
                ) -> np.ndarray:
    """Independent draws (chain, draw, M, K) of diagonal Gaussians N(mean, scale²)."""
    rng = np.random.default_rng(seed)
    return mean + scale * rng.standard_normal((chains, draws, *mean.shape))


def analyse_latent(run: Any, n_data: int, *, chains: int, warmup: int, samples: int,
                   seed: int, progress_bar: bool, opt_steps: int = 1000) -> LatentAnalysis:
    """NUTS on p(z|x) for the first ``n_data`` test images; q_φ and q* against it."""
    import jax

    from inference import amortization as am
    from inference.commands.vae import arrays_for
    from inference.diagnostics import from_draws, gate

    x_all, y_all = run.data.x_test, run.data.y_test
    n = min(int(n_data), len(x_all))
    x, c = arrays_for(run.vae.config, x_all[:n], None if y_all is None else y_all[:n])
    t0 = time.perf_counter()
    idata = am.sample_latent(run, x, c, num_chains=chains, num_warmup=warmup,
                             num_samples=samples, seed=seed, progress_bar=progress_bar)
    nuts_s = time.perf_counter() - t0
    lj = am.vae_log_joint(am.numpyro_twin(run), x, c)
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
    ll_q = _pointwise_loglik(run, x, c, zq)
    svi = from_draws({"z": zq}, log_likelihood={"x": ll_q}, observed_data={"x": x})
    g = gate(idata)
    nuts_mean = z.mean(0)
    nuts_sd = z.std(0)
    metrics: dict[str, Any] = {
        "target": "latent", "backend": run.header["backend"], "n_data": n,
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
        "mean_sd_ratio_amortized": float((rep.amortized.scale / nuts_sd).mean()),
        "mean_abs_diff_mean_optimal": float(np.abs(rep.optimal.loc - nuts_mean).mean()),
        "mean_sd_ratio_optimal": float((rep.optimal.scale / nuts_sd).mean()),
    }
    if grid is not None:
        metrics["nuts_max_abs_err_mean_vs_grid"] = float(np.abs(nuts_mean - grid.mean).max())
        metrics["nuts_max_rel_err_sd_vs_grid"] = float(np.abs(nuts_sd / grid.sd - 1).max())
    return LatentAnalysis(idata, svi, rep, grid, metrics)


def _pointwise_loglik(run: Any, x: np.ndarray, c: np.ndarray | None, z: np.ndarray
                      ) -> np.ndarray:
    """Σ_d log p(x_id | z_i), (chain, draw, M), at latent draws z (chain, draw, M, K)."""
    ll = run.mod.log_likelihood(run.vae, x, z.astype(np.float32), c)  # (chain, draw, M, D)
    return np.asarray(ll, np.float64).sum(-1)


def pair_coords(idata: Any) -> dict[str, list[int]]:
    """The pair plot shows the latents of the first two images (it grows with their square)."""
    dim = idata.posterior["z"].dims[2]  # "data" (the NumPyro plate) or "z_dim_0"
    return {dim: [0, 1]}


def write_latent_outputs(res: LatentAnalysis, out: Path, prefix: str = "") -> list[Path]:
    """posterior.nc, the diagnostic plots and (latent size 2) the overlay plot."""
    from inference import amortization as am
    from inference.diagnostics import plot_diagnostics
    from inference.mcmc import save_inferencedata

    paths = [save_inferencedata(res.idata, out / f"{prefix}posterior.nc")]
    paths += plot_diagnostics(res.idata, out, prefix=prefix, pair_coords=pair_coords(res.idata))
    if res.grid is not None and res.gaps.amortized.loc.shape[1] == 2:
        paths.append(am.plot_overlay(res.grid, am.latent_draws(res.idata), res.gaps, out,
                                     name=f"{prefix}latent_overlay.png"))
    return paths


def add_nuts_options(p: argparse.ArgumentParser, *, n_data: int, chains: int, warmup: int,
                     samples: int) -> None:
    """``--n-data --chains --warmup --samples`` with these defaults (mcmc and compare)."""
    p.add_argument("--n-data", type=int, default=n_data,
                   help=f"test images (latent target; default {n_data})")
    p.add_argument("--chains", type=int, default=chains, help=f"chains (default {chains})")
    p.add_argument("--warmup", type=int, default=warmup, help="warmup steps per chain")
    p.add_argument("--samples", type=int, default=samples, help="kept draws per chain")


def check_nuts_options(args: argparse.Namespace) -> None:
    """One-line errors for the options of :func:`add_nuts_options`."""
    check(args.samples >= 1, f"--samples must be >= 1, got {args.samples}")
    check(args.warmup >= 0, f"--warmup must be >= 0, got {args.warmup}")
    check(args.chains >= 1, f"--chains must be >= 1, got {args.chains}")
    check(args.n_data >= 1, f"--n-data must be >= 1, got {args.n_data}")


def _mcmc(args: argparse.Namespace, verbose: bool = True) -> int:
    from inference.commands.vae import load_run

    check_nuts_options(args)
    run_dir = Path(args.run_dir)
    header = check_run_header(run_dir)
    if args.target == "weights":
        if not is_bayesian(header):
            raise VarbayesError(f"{run_dir} is a plain VAE run (point-estimate decoder): "
                                "--target weights needs a Bayesian decoder, so train with "
                                "'varbayes vae train --bayesian'")
        return _weights(args, run_dir, verbose)
    if is_bayesian(header):
        raise VarbayesError(f"{run_dir} is a Bayesian-decoder run: use --target weights")
    run = load_run(run_dir, args.data_dir)
    out = out_dir(args.out)
    res = analyse_latent(run, args.n_data, chains=args.chains, warmup=args.warmup,
                         samples=args.samples, seed=args.seed,
                         progress_bar=not args.quiet)
    write_latent_outputs(res, out)
    write_metrics(out, res.metrics)
    if verbose:
        m = res.metrics
        print(f"varbayes mcmc: NUTS on p(z|x) for {m['n_data']} test images of {run_dir} "
              f"({m['backend']}, {m['chains']}x{m['samples']} draws, {m['nuts_seconds']:.1f} s)\n"
              f"  gate {'PASS' if m['gate_passed'] else 'FAIL'}: max r̂ {m['max_rhat']:.3f}, "
              f"min bulk ESS {m['min_ess_bulk']:.0f}, {m['divergences']} divergences\n"
              f"  log p(x) {m['log_px']:.3f} ({m['log_px_method']}), ELBO q_φ "
              f"{m['elbo_amortized']:.3f}, ELBO q* {m['elbo_optimal']:.3f} nats/datapoint\n"
              f"  gaps: approximation {m['approximation_gap']:.4f}, amortization "
              f"{m['amortization_gap']:.4f} nats; KL(p‖q_φ) {m['kl_p_q_amortized']:.4f}\n"
              f"-> {out}")
    return 0


def _weights(args: argparse.Namespace, run_dir: Path, verbose: bool) -> int:
    """``--target weights``: NUTS over a Bayesian run's decoder weights and latents."""
    from inference.diagnostics import gate, plot_diagnostics
    from inference.mcmc import save_inferencedata
    from inference.weights_posterior import INVARIANT, plot_overlay, run_weights_posterior

    res = run_weights_posterior(run_dir, args.data_dir, num_chains=args.chains,
                                num_warmup=args.warmup, num_samples=args.samples,
                                seed=args.seed, progress_bar=not args.quiet)
    out = out_dir(args.out)
    save_inferencedata(res.nuts, out / "posterior.nc")
    save_inferencedata(res.svi, out / "svi_posterior.nc")
    # θ is identified only up to hidden-unit permutations and sign flips, so the gate and
    # the plots use the symmetry-invariant output biases.
    g = gate(res.nuts, var_names=[INVARIANT])
    plot_diagnostics(res.nuts, out, var_names=[INVARIANT],
                     pair_coords={res.nuts.posterior[INVARIANT].dims[2]: [0, 1]})
    plot_overlay(res, out)
    metrics = {**res.summary, "target": "weights", "gate_passed": g.passed,
               "max_rhat": g.max_rhat, "min_ess_bulk": g.min_ess_bulk,
               "divergences": g.divergences, "chains": args.chains, "samples": args.samples,
               "warmup": args.warmup}
    write_metrics(out, metrics)
    if verbose:
        print(f"varbayes mcmc: NUTS on the decoder weights and latents of {run_dir} "
              f"({res.summary['n_weights']} weights, {res.summary['n_images']} images)\n"
              f"  gate (output biases) {'PASS' if g.passed else 'FAIL'}: max r̂ "
              f"{g.max_rhat:.3f}, min bulk ESS {g.min_ess_bulk:.0f}, {g.divergences} "
              f"divergences\n"
              f"  q(θ) vs NUTS: output-bias |Δmean| {res.summary['out_bias_mean_abs_diff']:.3f},"
              f" sd ratio q/NUTS {res.summary['out_bias_sd_ratio_median']:.2f}, predictive "
              f"pixel |Δp| {res.summary['predictive_pixel_abs_diff']:.4f}\n-> {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes mcmc``."""
    from inference.cli import add_common, add_data_dir

    p = sub.add_parser("mcmc", help="NUTS on a trained run: InferenceData and arviz plots",
                       description="Sample a trained run's posterior with NUTS (the run's "
                                   "backend) and write posterior.nc (arviz InferenceData), "
                                   "metrics.json (diagnostics gate r̂ <= 1.01 and bulk ESS >= "
                                   "400, divergences, amortization gap) and trace, rank, "
                                   "pair, energy and forest plots.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'varbayes vae train'")
    p.add_argument("--target", choices=TARGETS, default="latent",
                   help="latent: p(z|x) for test images; weights: a --bayesian run's decoder")
    add_nuts_options(p, n_data=4, chains=4, warmup=500, samples=500)
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_mcmc)
