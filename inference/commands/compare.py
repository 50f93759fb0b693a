"""``varbayes compare RUN_DIR --out DIR``: SVI against NUTS on a trained run, as one report.

For the first ``--n-data`` test images: NUTS draws of p(z|x) and draws of the encoder's
q_φ(z|x), both as InferenceData (:mod:`varbayes.inference.vae.latent_posterior`), side by
side in ``az.summary`` tables, the diagnostics gate, the plots (trace, rank, pair, energy,
forest), the amortization gap, and model comparison by PSIS-LOO and WAIC:

* **VAE variants** (``--variants``, other runs on the same dataset, image size and
  binarization, refused otherwise; each scored on the first run's test images): the pointwise
  log-likelihood of test image i at draw s is log p(x_i | z_i^s) with z_i^s ~ p(z_i | x_i).
  Only x_i informs z_i, so leaving x_i out returns z_i to its prior and elpd_loo,i estimates
  log p(x_i) itself: LOO here compares the models' held-out evidence, computed by PSIS from
  posterior draws (the harmonic-mean-like direction, so Pareto k̂ says when to distrust it;
  the report prints the quadrature/IS value next to it).
* **Ising couplings** (``--ising-couplings``): Gibbs draws of a small denoising posterior per
  coupling J; the pointwise log-likelihood is log p(x_ij | z_ij) of each noisy pixel, so LOO
  asks how well each J predicts a held-out pixel from the rest of the image.

Writes ``report.md`` with its PNGs, the same report as one self-contained ``report.html``
(figures embedded, no network), ``metrics.json``, ``nuts_posterior.nc`` and
``svi_posterior.nc``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from varbayes.inference.commands._limits import check_latent_draws_fit, check_nuts_steps
from varbayes.inference.commands._options import (
    add_common,
    add_data_dir,
    add_nuts_options,
    add_run_dir,
    check_nuts_options,
    numbers,
)
from varbayes.inference.io import (
    Progress,
    out_dir,
    save_inferencedata,
    verbose,
    write_metrics,
)
from varbayes.inference.ising.compare import coupling_comparison
from varbayes.inference.mcmc.nuts import chain_metrics
from varbayes.inference.vae.latent_posterior import (
    analyse_latent,
    pair_coords,
    write_latent_outputs,
)
from varbayes.inference.vae.run import load_run, read_header
from varbayes.inference.workflow import report
from varbayes.inference.workflow.diagnostics import (
    plot_diagnostics,
    plot_forest_comparison,
    plot_ppc,
)
from varbayes.models.errors import check


def _data_of(header: dict[str, Any]) -> dict[str, str]:
    """What a run's test images depend on: its dataset, image size and binarization."""
    meta = header["meta"]
    return {"dataset": f"dataset {meta['run']['dataset']}",
            "pixels": f"{meta['vae']['x_dim']} pixels",
            "binarize": f"--binarize {meta['run']['binarize']}"}


def check_same_data(run_dir: Path, header: dict[str, Any], variant: Path,
                    variant_header: dict[str, Any]) -> None:
    """Refuse a variant trained on another dataset, image size or binarization than the
    run: the models are compared by their log-likelihood of the same test images."""
    a, b = _data_of(header), _data_of(variant_header)
    diff = [k for k in a if a[k] != b[k]]
    check(not diff, f"--variants {variant} was trained on {', '.join(b[k] for k in diff)} but "
                    f"{run_dir} on {', '.join(a[k] for k in diff)}: variants are compared by "
                    "their log-likelihood of the same test images, so pass runs trained on the "
                    "same dataset, image size and binarization")


def _compare(args: argparse.Namespace) -> int:
    check_nuts_options(args)
    couplings = numbers(args.ising_couplings, "--ising-couplings")
    variants = [Path(v) for v in args.variants.split(",") if v.strip()]
    run_dir = Path(args.run_dir)
    first = read_header(run_dir)
    for d in variants:
        check_same_data(run_dir, first, d, read_header(d))
    run = load_run(run_dir, args.data_dir)
    check_latent_draws_fit(args.chains, args.samples, min(args.n_data, len(run.data.x_test)),
                           run.vae.config.x_dim, warmup=args.warmup, runs=1 + len(variants))
    check_nuts_steps(args.warmup, args.samples)
    out = out_dir(args.out)
    t0 = time.perf_counter()
    kw = dict(chains=args.chains, warmup=args.warmup, samples=args.samples, seed=args.seed,
              progress_bar=verbose())
    stages = 1 + len(variants) + bool(couplings)  # NumPyro's own bars only with --verbose
    bar = Progress(stages, "compare")
    bar.note(stage=f"NUTS on p(z|x) of {run_dir.name}")
    main = analyse_latent(run, args.n_data, **kw)
    bar.update()
    written = write_latent_outputs(main, out, prefix="nuts_")
    save_inferencedata(main.svi, out / "svi_posterior.nc")
    svi_plots = plot_diagnostics(main.svi, out, prefix="svi_", pair_coords=pair_coords(main.svi))
    forest = plot_forest_comparison({"NUTS": main.idata, "SVI q_φ": main.svi},
                                    out / "forest_nuts_vs_svi.png")
    ppc = plot_ppc(main.idata, out / "nuts_ppc.png")
    fits = {"NUTS": main.idata, "SVI q_φ": main.svi}
    # the MCMC gate is for MCMC: the draws of q are independent, so r̂ and ESS say nothing
    # about q; its PSIS k̂ does (Yao et al. 2018)
    gates = report.gates({"NUTS": main.idata})
    m = main.metrics
    metrics: dict[str, Any] = {f"latent_{k}": v for k, v in m.items()}
    g = main.gaps
    gap_rows = [[i, g.log_px[i], g.elbo_amortized[i], g.elbo_optimal[i],
                 g.approximation_gap[i], g.amortization_gap[i], g.inference_gap[i]]
                for i in range(len(g.log_px))]
    sections = [
        ("Run", f"`{run_dir}` ({m['backend']}, latent size {m['latent']}); NUTS "
                f"{args.chains} chains × {args.samples} draws after {args.warmup} warmup "
                f"steps on the first {m['n_data']} test images ({m['nuts_seconds']:.1f} s); "
                "SVI: the same number of independent draws of the encoder's q_φ(z|x)."),
        ("Diagnostics gate (NUTS)", "r̂ ≤ 1.01, bulk ESS ≥ 400 and no divergences. The gate "
         "is for MCMC: the draws of q_φ are independent, so their r̂ and ESS say nothing "
         "about q; the next section does.\n\n" + report.gate_table(gates)),
        ("Is q good enough? PSIS k̂ of q", "Pareto k̂ of the importance ratios "
         "p(x_i, z)/q(z|x_i) over the draws of q, per image (Yao, Vehtari, Simpson & Gelman "
         "2018, \"Yes, but did it work?\"). Below 0.5 q is close to p(z|x); up to good_k it "
         "is usable, better refined by importance sampling; above good_k its estimates "
         "should not be trusted. q\\* is the best per-image Gaussian: its k̂ is what a "
         "Gaussian family can do, the rest of q_φ's is the amortization's.\n\n"
         + report.q_check_table(main.q_checks)),
        ("Posterior summaries (az.summary)", report.summary_side_by_side(fits)),
        ("Amortization gap", "Nats per image. log p(x) by "
         f"{g.log_px_method}; ELBO(q\\*) from the best per-image Gaussian. approximation gap "
         "= log p(x) − ELBO(q\\*) = KL(q\\*‖p); amortization gap = ELBO(q\\*) − ELBO(q_φ).\n\n"
         + report.markdown_table(gap_rows, ["image", "log p(x)", "ELBO q_φ", "ELBO q*",
                                            "approximation", "amortization", "total"],
                                 digits=4)
         + f"\n\nKL(p‖q_φ) = {m['kl_p_q_amortized']:.4f}, KL(p‖q\\*) = "
           f"{m['kl_p_q_optimal']:.4f} nats per image (from the NUTS draws)."),
        ("Posterior predictive check", "Observed pixels against images drawn from "
         "p(x | z) at NUTS draws of z (az.plot_ppc).\n\n"
         + report.image(ppc, "az.plot_ppc: observed against posterior predictive")),
        ("Plots", "\n\n".join(
            [report.image(forest, "forest: NUTS against SVI q_φ")]
            + ([report.image(out / "nuts_latent_overlay.png",
                             "p(z|x) on a grid, NUTS draws, q_φ and q*")]
               if (out / "nuts_latent_overlay.png").exists() else [])
            + [report.image(out / f"nuts_{k}.png", f"NUTS {k}")
               for k in ("trace", "rank", "pair", "energy") if (out / f"nuts_{k}.png").exists()]
            + [report.image(p, f"SVI {p.stem.removeprefix('svi_')}") for p in svi_plots
               if p.stem in ("svi_trace", "svi_rank")])),
    ]
    # model comparison between VAE variants: the run itself and --variants
    models = {run_dir.name: main.idata}
    evid = [[run_dir.name, float(g.log_px.sum()), g.log_px_method]]
    for d in variants:
        bar.note(stage=f"NUTS on p(z|x) of {d.name}")
        # on the first run's test images: a dynamically binarized test set depends on the
        # run's seed, and LOO compares models on the same data
        variant = load_run(d, with_data=False)._replace(data=run.data)
        v = analyse_latent(variant, args.n_data, **kw)
        bar.update()
        name = d.name if d.name not in models else str(d)
        models[name] = v.idata
        evid.append([name, float(v.gaps.log_px.sum()), v.gaps.log_px_method])
        metrics[f"variant_gate_passed_{name}"] = v.metrics["gate_passed"]
    text, mc = report.model_comparison(models)
    metrics.update(mc)
    sections.append(("Model comparison: VAE variants", (
        "Pointwise log-likelihood log p(x_i | z_i) at NUTS draws of p(z_i | x_i): leaving "
        "x_i out returns z_i to its prior, so elpd_loo,i estimates log p(x_i), the held-out "
        "evidence of image i. The sum of log p(x_i) by quadrature/IS is the check:\n\n"
        + report.markdown_table(evid, ["model", "Σ log p(x_i)", "method"]) + "\n\n" + text)))
    if couplings:
        bar.note(stage="Ising couplings")
        body, im = coupling_comparison(couplings, args.seed)
        bar.update()
        metrics.update(im)
        sections.append(("Model comparison: Ising couplings", body))
    bar.close()
    metrics["seconds"] = time.perf_counter() - t0
    metrics.update(chain_metrics(main.idata))  # every NUTS run here has the same chains
    figures = [p for p in [*written, *svi_plots, forest, ppc] if Path(p).suffix == ".png"]
    path = report.write_report(out, f"SVI vs NUTS: {run_dir.name}", sections,
                               figures=figures)
    write_metrics(out, metrics)
    print(f"varbayes compare: {run_dir} on {m['n_data']} test images\n"
          f"  gate NUTS {'PASS' if m['gate_passed'] else 'FAIL'} (max r̂ "
          f"{m['max_rhat']:.3f}, min ESS {m['min_ess_bulk']:.0f}, {m['divergences']} "
          f"divergences); amortization gap {m['amortization_gap']:.4f} nats\n"
          f"  k̂ of q_φ: {main.q_checks['SVI q_φ'].verdict}\n"
          + "".join(f"  elpd_loo {k[4:]}: {v:.2f} nats\n" for k, v in mc.items()
                    if k.startswith("loo_") and not k.startswith(("loo_se", "loo_high", "loo_good",
                                                                  "loo_max")))
          + f"-> {path} and {path.with_suffix('.html')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes compare``."""
    p = sub.add_parser("compare", help="SVI vs NUTS on a trained run: one Markdown report",
                       description="Compare a trained VAE run's amortized q(z|x) with NUTS "
                                   "draws of p(z|x): az.summary tables, the diagnostics gate, "
                                   "trace/rank/pair/energy/forest plots, the amortization gap "
                                   "and PSIS-LOO / WAIC model comparison, in report.md.")
    add_run_dir(p)
    p.add_argument("--variants", default="", metavar="DIR[,DIR]",
                   help="other VAE runs on the same data, compared by PSIS-LOO and WAIC")
    p.add_argument("--ising-couplings", default="0,0.5,1", metavar="J[,J]",
                   help="Ising couplings to compare on a small denoising task (default "
                        "0,0.5,1; empty to skip)")
    add_nuts_options(p, n_data=6, chains=2, warmup=300, samples=500)
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_compare)
