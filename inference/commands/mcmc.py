"""``varbayes mcmc RUN_DIR --target latent|weights``: NUTS on a trained run, with arviz.

``--target latent`` samples p(z|x) for the first ``--n-data`` test images under the run's
decoder (in the run's backend) and compares it with the encoder's q_φ(z|x) and the best
per-datapoint Gaussian q* (:mod:`varbayes.inference.vae.latent_posterior`). ``--target
weights`` is for a Bayesian-decoder run (``vae train --bayesian``,
:mod:`varbayes.inference.vae.weights_posterior`).

Writes ``posterior.nc`` (InferenceData, netCDF), ``metrics.json`` and the plots trace, rank,
pair, energy, forest (and ``latent_overlay.png`` for latent size 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from varbayes.inference.commands._limits import (
    check_latent_draws_fit,
    check_nuts_steps,
    check_product_fits,
)
from varbayes.inference.commands._options import (
    add_common,
    add_data_dir,
    add_nuts_options,
    add_run_dir,
    check_nuts_options,
)
from varbayes.inference.io import (
    Progress,
    out_dir,
    save_inferencedata,
    verbose,
    write_metrics,
)
from varbayes.inference.mcmc.nuts import chain_metrics
from varbayes.inference.vae.latent_posterior import analyse_latent, write_latent_outputs
from varbayes.inference.vae.run import is_bayesian, load_run, read_header
from varbayes.inference.vae.weights_posterior import (
    INVARIANT,
    plot_overlay,
    run_weights_posterior,
)
from varbayes.inference.workflow.diagnostics import gate, plot_diagnostics
from varbayes.models.errors import VarbayesError

TARGETS = ("latent", "weights")


def _mcmc(args: argparse.Namespace) -> int:
    check_nuts_options(args)
    run_dir = Path(args.run_dir)
    header = read_header(run_dir)
    if args.target == "weights":
        if not is_bayesian(header):
            raise VarbayesError(f"{run_dir} is a plain VAE run (point-estimate decoder): "
                                "--target weights needs a Bayesian decoder, so train with "
                                "'varbayes vae train --bayesian'")
        n_train = header["meta"]["run"].get("n_train")
        if n_train:  # all training images are NUTS's data (too many are refused later)
            check_product_fits({"--chains": args.chains, "--samples": args.samples},
                               4 * n_train * int(header["meta"]["vae"]["x_dim"]),
                               f"the posterior predictive images of {n_train} training images")
        check_nuts_steps(args.warmup, args.samples)
        return _weights(args, run_dir)
    if is_bayesian(header):
        raise VarbayesError(f"{run_dir} is a Bayesian-decoder run: use --target weights")
    run = load_run(run_dir, args.data_dir)
    check_latent_draws_fit(args.chains, args.samples, min(args.n_data, len(run.data.x_test)),
                           run.vae.config.x_dim, warmup=args.warmup)
    check_nuts_steps(args.warmup, args.samples)
    out = out_dir(args.out)
    with Progress(1, "mcmc") as bar:  # NumPyro's own bars only with --verbose
        bar.note(stage=f"NUTS on p(z|x), {args.chains} chains x {args.warmup}+{args.samples}")
        res = analyse_latent(run, args.n_data, chains=args.chains, warmup=args.warmup,
                             samples=args.samples, seed=args.seed, progress_bar=verbose())
        bar.update()
    write_latent_outputs(res, out)
    write_metrics(out, {**res.metrics, **chain_metrics(res.idata)})
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


def _weights(args: argparse.Namespace, run_dir: Path) -> int:
    """``--target weights``: NUTS over a Bayesian run's decoder weights and latents."""
    res = run_weights_posterior(run_dir, args.data_dir, num_chains=args.chains,
                                num_warmup=args.warmup, num_samples=args.samples,
                                seed=args.seed, progress_bar=verbose())
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
               "warmup": args.warmup, **chain_metrics(res.nuts)}
    write_metrics(out, metrics)
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
    p = sub.add_parser("mcmc", help="NUTS on a trained run: InferenceData and arviz plots",
                       description="Sample a trained run's posterior with NUTS (the run's "
                                   "backend) and write posterior.nc (arviz InferenceData), "
                                   "metrics.json (diagnostics gate r̂ <= 1.01 and bulk ESS >= "
                                   "400, divergences, amortization gap) and trace, rank, "
                                   "pair, energy and forest plots.")
    add_run_dir(p)
    p.add_argument("--target", choices=TARGETS, default="latent",
                   help="latent: p(z|x) for test images; weights: a --bayesian run's decoder")
    add_nuts_options(p, n_data=4, chains=4, warmup=500, samples=500)
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_mcmc)
