"""``varbayes evidence RUN_DIR``: marginal-likelihood estimates for a trained VAE run, by
:func:`varbayes.inference.vae.bayes_evidence.bayesian_log_evidence`.

``--devices N`` splits the datapoints of a NumPyro run's batches over N JAX devices (IS, the
ELBO and AIS; :mod:`varbayes.inference.evidence.parallel`). In a ``torchrun`` process group
a Pyro run's datapoints are split over the ranks; only rank 0 writes ``--out``."""

from __future__ import annotations

import argparse
from pathlib import Path

from varbayes.inference import ranks, sharding
from varbayes.inference.commands._limits import (
    INT32_MAX,
    check_counter,
    check_fits,
    check_product_fits,
)
from varbayes.inference.commands._options import (
    add_common,
    add_data_dir,
    add_parallel,
    add_run_dir,
    numbers,
)
from varbayes.inference.evidence import ais, hmc
from varbayes.inference.io import out_dir, progress
from varbayes.inference.vae.bayes_evidence import ESTIMATORS, check_estimators, write_evidence
from varbayes.inference.vae.run import Run, load_run, read_header
from varbayes.models.errors import check


def _ais_options(args: argparse.Namespace) -> tuple[list[int], ais.AISOptions]:
    """The checked ``--ais-steps`` list and AIS options (the largest T) from the CLI."""
    steps = sorted(set(numbers(args.ais_steps, "--ais-steps", int)))
    check(bool(steps) and steps[0] >= 1, f"--ais-steps must be integers >= 1, got "
                                         f"{args.ais_steps!r}")
    check(args.ais_chains >= 1, f"--ais-chains must be >= 1, got {args.ais_chains}")
    check(args.schedule in ais.SCHEDULES, f"--schedule must be one of "
                                          f"{', '.join(ais.SCHEDULES)}, got {args.schedule!r}")
    check(args.ais_init in ais.INITS, f"--ais-init must be one of {', '.join(ais.INITS)}, got "
                                      f"{args.ais_init!r}")
    opts = ais.AISOptions(n_steps=steps[-1], chains=args.ais_chains, schedule=args.schedule,
                          init=args.ais_init)
    ais.check_options(opts)
    return steps, opts


#: Bytes per importance sample and datapoint of a batch: its log weight in float32, then
#: float64, and a sorted copy for the Pareto k̂.
IS_BYTES_PER_WEIGHT = 20


def check_counts_fit(args: argparse.Namespace, run: Run, names: list[str], ais_steps: int
                     ) -> None:
    """Refuse counts whose arrays cannot fit in memory or whose loops overflow JAX's 32-bit
    counters, before any estimator runs (lower bounds: the arrays each count sizes)."""
    cfg = run.vae.config
    n = len(run.data.x_test[: args.n_data])
    batch = min(args.batch_size, n)
    check_product_fits({"--k": args.k, "--batch-size": batch}, IS_BYTES_PER_WEIGHT,
                       "the importance log weights of a batch")
    if args.chunk is not None:  # else chosen to fit (auto_chunk)
        flag = "--chunk" if args.chunk < args.k else "--k"
        check_product_fits({flag: min(args.chunk, args.k), "--batch-size": batch}, 4 * cfg.x_dim,
                           "the per-pixel log-likelihoods of one chunk of samples")
    if "ais" in names:
        check_product_fits({"--ais-steps": ais_steps, "--ais-chains": args.ais_chains,
                            "--batch-size": batch}, 8, "AIS's per-step acceptances and step sizes",
                           caps={"--ais-steps": INT32_MAX})
        check_counter({"--ais-steps": ais_steps}, "AIS's 32-bit step counter")
        check_product_fits({"--ais-chains": args.ais_chains, "--batch-size": batch},
                           4 * cfg.x_dim, "the decoded images of the AIS chains")
    if "hmc" in names:
        check_fits("--hmc-samples", args.hmc_samples, 4 * cfg.z_dim * batch + 8,
                   "the HMC draws of a batch", given=f"with --batch-size {batch}", cap=INT32_MAX)
        check_fits("--hmc-warmup", args.hmc_warmup, 8, "the warm-up's PRNG keys", cap=INT32_MAX)
        for flag, value in (("--hmc-warmup", args.hmc_warmup), ("--hmc-samples", args.hmc_samples)):
            check_counter({flag: value}, "HMC's 32-bit step counter")
    if run.sigma is not None:  # a Bayesian decoder: n_theta copies of the weights
        weights = sum(int(v.size) for v in run.mod.weights(run.vae).values())
        check_fits("--n-theta", args.n_theta, 4 * weights, "the decoder draws θ ~ q(θ)",
                   given=f"{weights} weights each")


def check_devices(args: argparse.Namespace, backend: str) -> None:
    """Refuse ``--devices`` on a Pyro run and ``--nproc`` on a NumPyro one, more devices
    than JAX sees, and a ``--batch-size`` that they do not split evenly (one line each)."""
    check(args.devices >= 1, f"--devices must be >= 1, got {args.devices}")
    check(backend == "pyro" or ranks.world() == 1,
          f"--nproc {ranks.world()} is for a Pyro run: a NumPyro run uses several devices "
          f"with --devices {ranks.world()}")
    if args.devices == 1:
        return
    check(backend == "numpyro", f"--devices splits a NumPyro (JAX) run over JAX devices: use "
                                f"--nproc {args.devices} (torch.distributed) for a Pyro run")
    sharding.check_devices(args.devices)
    sharding.check_divides(args.batch_size, args.devices, "--batch-size")


def _evidence(args: argparse.Namespace) -> int:
    names = [s.strip() for s in args.estimators.split(",") if s.strip()]
    check(names, f"--estimators must name at least one of {', '.join(ESTIMATORS)}, got "
                 f"{args.estimators!r}")
    bad = [s for s in names if s not in ESTIMATORS]
    check(not bad, f"unknown estimator(s) {', '.join(bad)}: choose from {', '.join(ESTIMATORS)}")
    check(args.k >= 1, f"--k must be >= 1, got {args.k}")
    check(args.n_data is None or args.n_data >= 1, f"--n-data must be >= 1, got {args.n_data}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    check(args.chunk is None or args.chunk >= 1, f"--chunk must be >= 1, got {args.chunk}")
    steps, ais_opts = _ais_options(args) if "ais" in names else ([100], ais.DEFAULTS)
    hmc_opts = hmc.HMCEvidenceOptions(n_samples=args.hmc_samples, n_warmup=args.hmc_warmup)
    if "hmc" in names:
        hmc.check_options(hmc_opts)
    check(args.n_theta >= 1, f"--n-theta must be >= 1, got {args.n_theta}")
    run_dir = Path(args.run_dir)
    check_devices(args, read_header(run_dir, two_layer_ok=True)["backend"])
    run = load_run(run_dir, args.data_dir, two_layer_ok=True)
    check_estimators(run, names)
    check_counts_fit(args, run, names, steps[-1])

    main = ranks.is_main()
    # every rank runs the estimators (they gather across ranks); only rank 0 writes --out
    out = out_dir(args.out) if main else Path(args.out)
    ev, metrics = write_evidence(run, out, names, n_data=args.n_data, k=args.k,
                                 n_theta=args.n_theta, seed=args.seed,
                                 batch_size=args.batch_size, chunk=args.chunk, ais_steps=steps,
                                 ais_options=ais_opts, hmc_options=hmc_opts,
                                 progress=(lambda b, label: progress(b, desc=label)) if main
                                 else None, devices=args.devices)
    if not main:
        return 0
    lines = [f"evidence on {metrics['n_data']} test points of {run_dir} ({run.backend}, "
             f"K={args.k}"
             + (f", {ev.n_theta} draws θ ~ q(θ): log E_q(θ) p(x|θ); ELBO averaged over θ):"
                if ev.n_theta > 1 else "):")]
    for name in names:
        lines.append(f"  {name:<5} {metrics[name]:.3f} ± {metrics[name + '_stderr']:.3f} nats "
                     f"per datapoint ({metrics[name + '_seconds']:.1f} s)")
    if "is" in names and args.k >= 5:
        lines.append(f"  Pareto k̂ > 0.7 for {100 * metrics['is_khat_frac_above_0_7']:.1f}% "
                     f"of datapoints; mean ESS {metrics['is_ess_mean']:.1f} of "
                     f"{args.k * ev.n_theta}")
    lines.append(f"-> {out}")
    print("\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes evidence``."""
    p = sub.add_parser("evidence", help="marginal-likelihood estimates for a trained run",
                       description="Estimate log p(x) per test datapoint (nats) for a trained "
                                   "VAE run: the ELBO, importance sampling with the guide "
                                   "as proposal (the IWAE bound), annealed importance "
                                   "sampling (ais), the AEVB appendix-D HMC estimator (hmc) "
                                   "and, for latent size <= 2, quadrature (exact to about "
                                   "1e-6 nats).")
    add_run_dir(p)
    p.add_argument("--estimators", default="elbo,is",
                   help=f"comma-separated, from {', '.join(ESTIMATORS)} (default elbo,is)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per datapoint")
    p.add_argument("--n-data", type=int, default=None,
                   help="first N test datapoints (default all)")
    p.add_argument("--batch-size", type=int, default=500, help="datapoints per batch")
    p.add_argument("--chunk", type=int, default=None,
                   help="IS samples drawn at once (memory); default: chosen from the batch size")
    p.add_argument("--ais-steps", default="100",
                   help="AIS: intermediate distributions T, comma-separated for a curve; the "
                        "largest gives the 'ais' metric (default 100)")
    p.add_argument("--ais-chains", type=int, default=16, help="AIS chains per datapoint")
    p.add_argument("--schedule", default="sigmoid", help="AIS schedule: linear or sigmoid")
    p.add_argument("--ais-init", default="prior",
                   help="AIS start density: prior or guide (q(z|x))")
    p.add_argument("--hmc-samples", type=int, default=1000,
                   help="hmc (AEVB appendix D): posterior draws per datapoint")
    p.add_argument("--hmc-warmup", type=int, default=200, help="hmc: adapting transitions")
    p.add_argument("--n-theta", type=int, default=10,
                   help="--bayesian runs: decoder draws θ ~ q(θ); every estimator then "
                        "estimates log E_q(θ) p(x|θ) (and <name>_average E_q(θ) log p(x|θ))")
    add_parallel(p)
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_evidence)
