"""``varbayes evidence RUN_DIR``: marginal-likelihood estimates for a trained VAE run."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from inference import evidence
from inference.errors import VarbayesError, check
from inference.io import out_dir, progress, save_figure, write_metrics

ESTIMATORS = ("elbo", "is", "ais", "hmc", "quadrature")


def batches_for(vae: Any, backend: str, x: np.ndarray, c: np.ndarray | None,
                batch_size: int) -> list[evidence.Batch]:
    """``(args, kwargs)`` batches of (N, D) points ``x`` (and conditioning ``c``) for a VAE
    model and guide ``(vae, x, c)`` of ``backend``."""
    if backend == "pyro":
        import torch

        arr = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    else:
        import jax.numpy as jnp

        arr = lambda a: None if a is None else jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return [((vae, arr(x[i:i + batch_size]), arr(None if c is None else c[i:i + batch_size])),
             {}) for i in range(0, len(x), batch_size)]


def vae_batches(run: Any, n_data: int | None, batch_size: int) -> list[evidence.Batch]:
    """``(args, kwargs)`` batches of the run's test set for its model and guide."""
    from inference.commands.vae import arrays_for

    x, y = run.data.x_test, run.data.y_test
    n = len(x) if n_data is None else min(int(n_data), len(x))
    x, c = arrays_for(run.vae.config, x[:n], None if y is None else y[:n])
    return batches_for(run.vae, run.header["backend"], x, c, batch_size)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _curve_figure(out: Path, res: evidence.ISResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [*sorted(res.prefix), res.k]
    vals = [res.prefix[j].mean() for j in ks[:-1]] + [res.log_px.mean()]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogx(ks, vals, "o-", label="IS (IWAE bound)")
    ax.axhline(res.elbo.mean(), color="grey", ls="--", label="ELBO")
    ax.set_xlabel("importance samples K per datapoint")
    ax.set_ylabel("mean log p(x) (nats)")
    ax.legend()
    ax.set_title("estimate against compute")
    save_figure(fig, out / "evidence_vs_k.png")


def _vae_quadrature(run: Any, batches: list[evidence.Batch]) -> evidence.QuadratureResult:
    """Quadrature over z for a latent-≤2 VAE, through its NumPyro twin (same weights)."""
    import jax.numpy as jnp

    from models.vae import numpyro_model

    K = run.vae.config.z_dim
    check(K <= 2, f"quadrature needs latent size <= 2, but this run has {K}: use is")
    vae = numpyro_model.build(run.vae.config, run.mod.weights(run.vae))
    parts, secs = [], 0.0
    for (_, x, c), _kw in batches:
        x = jnp.asarray(np.asarray(x), dtype=jnp.float32)
        c = None if c is None else jnp.asarray(np.asarray(c), dtype=jnp.float32)
        lj = evidence.numpyro_log_joint(numpyro_model.model, "z", vae, x, c)
        q = evidence.quadrature(lj, K, x.shape[0])
        parts.append(q)
        secs += q.seconds
    return evidence.QuadratureResult(np.concatenate([q.log_px for q in parts]),
                                     np.concatenate([q.refinement for q in parts]), secs)


def _ais_options(args: argparse.Namespace) -> tuple[list[int], Any]:
    """The checked ``--ais-steps`` list and AIS options (the largest T) from the CLI."""
    from inference import ais

    try:
        steps = sorted({int(s) for s in args.ais_steps.split(",") if s.strip()})
    except ValueError:
        raise VarbayesError(f"--ais-steps must be comma-separated integers, got "
                            f"{args.ais_steps!r}") from None
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


def _hmc_options(args: argparse.Namespace) -> Any:
    from inference import hmc_evidence

    o = hmc_evidence.HMCEvidenceOptions(n_samples=args.hmc_samples, n_warmup=args.hmc_warmup)
    hmc_evidence.check_options(o)
    return o


def _run_ais(run: Any, batches: list[evidence.Batch], steps: list[int], opts: Any,
             seed: int) -> dict[int, Any]:
    """T -> AISResult for each T of ``--ais-steps``, in the run's own backend."""
    from inference import ais, ais_pyro

    fn = ais_pyro.pyro_ais if run.header["backend"] == "pyro" else ais.numpyro_ais
    return {T: fn(run.mod.model, run.mod.guide, batches, opts._replace(n_steps=T), seed=seed,
                  progress=lambda b, T=T: progress(b, desc=f"ais T={T}")) for T in steps}


def _vae_hmc(run: Any, batches: list[evidence.Batch], opts: Any, seed: int) -> Any:
    """The appendix-D estimator through the run's NumPyro twin (same weights)."""
    import jax.numpy as jnp

    from inference import hmc_evidence
    from models.vae import numpyro_model

    vae = numpyro_model.build(run.vae.config, run.mod.weights(run.vae))
    jb = [((vae, jnp.asarray(np.asarray(x), dtype=jnp.float32),
            None if c is None else jnp.asarray(np.asarray(c), dtype=jnp.float32)), {})
          for (_, x, c), _kw in batches]
    return hmc_evidence.numpyro_hmc_evidence(numpyro_model.model, numpyro_model.guide, jb, opts,
                                             seed=seed,
                                             progress=lambda b: progress(b, desc="hmc"))


def _ais_figure(out: Path, results: dict[int, Any], others: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = sorted(results)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar(Ts, [results[T].log_px.mean() for T in Ts],
                yerr=[_mean_se(results[T].log_px)[1] for T in Ts], fmt="o-", label="AIS")
    for (name, v), ls in zip(others.items(), ("--", ":", "-."), strict=False):
        ax.axhline(v, color="grey", ls=ls, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("intermediate distributions T")
    ax.set_ylabel("mean log p(x) (nats)")
    ax.legend()
    ax.set_title("AIS estimate against compute")
    save_figure(fig, out / "ais_vs_steps.png")


def theta_runs(run: Any, run_dir: Path, n_theta: int, seed: int) -> list[Any]:
    """``[run]`` for a point-estimate decoder; for a ``--bayesian`` run, ``n_theta`` copies
    of it whose decoders are draws θ_s ~ q(θ) (shared by all estimators and datapoints)."""
    from inference.bayes_evidence import theta_vaes
    from inference.commands.vae import load_sigma

    return [run._replace(vae=v)
            for v in theta_vaes(run.mod, run.vae, load_sigma(run_dir), n_theta, seed)]


def _compute(run: Any, names: list[str], args: argparse.Namespace, ks: list[int],
             steps: list[int], ais_opts: Any, hmc_opts: Any, seed: int) -> dict[str, Any]:
    """Every requested estimator for one (point-estimate) decoder: name -> result."""
    batches = vae_batches(run, args.n_data, args.batch_size)
    t0 = time.perf_counter()
    res = evidence.importance_sampling(run.mod.model, run.mod.guide, batches, args.k,
                                       backend=run.header["backend"], chunk=args.chunk,
                                       seed=seed, prefix_ks=ks,
                                       progress=lambda b: progress(b, desc="evidence"))
    got: dict[str, Any] = {"is": res, "is_seconds": time.perf_counter() - t0}
    if "quadrature" in names:
        got["quadrature"] = _vae_quadrature(run, batches)
    if "ais" in names:
        got["ais"] = _run_ais(run, batches, steps, ais_opts, seed)
    if "hmc" in names:
        got["hmc"] = _vae_hmc(run, batches, hmc_opts, seed)
    return got


def _lme(arrays: list[np.ndarray]) -> np.ndarray:
    """log-mean-exp over θ draws, per datapoint."""
    return evidence.log_mean_exp(np.stack(arrays), axis=0)


def _combine_theta(parts: list[dict[str, Any]]
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Combine per-θ results: log p̂(x) = log-mean-exp over θ_s of log p̂(x|θ_s), the
    estimate of log E_q(θ)[p(x|θ)] (joint importance sampling over θ and z for ``is``); the
    ELBO is averaged over θ. Also returns name -> the average over θ_s of log p̂(x|θ_s), an
    estimate of E_q(θ)[log p(x|θ)]. One part is returned unchanged."""
    if len(parts) == 1:
        return parts[0], {}
    first = parts[0]
    isr = [p["is"] for p in parts]
    got: dict[str, Any] = {
        "is": first["is"]._replace(
            log_px=_lme([r.log_px for r in isr]),
            elbo=np.mean([r.elbo for r in isr], axis=0),
            elbo_stderr=np.mean([r.elbo_stderr for r in isr], axis=0),
            ess=np.mean([r.ess for r in isr], axis=0), khat=np.max([r.khat for r in isr], 0),
            seconds=sum(r.seconds for r in isr),
            prefix={j: _lme([r.prefix[j] for r in isr]) for j in first["is"].prefix}),
        "is_seconds": sum(p["is_seconds"] for p in parts)}
    average = {"is": np.mean([r.log_px for r in isr], axis=0)}
    if "quadrature" in first:
        qs = [p["quadrature"] for p in parts]
        got["quadrature"] = evidence.QuadratureResult(
            _lme([q.log_px for q in qs]), np.max([q.refinement for q in qs], axis=0),
            sum(q.seconds for q in qs))
        average["quadrature"] = np.mean([q.log_px for q in qs], axis=0)
    if "ais" in first:
        got["ais"] = {}
        for T, r0 in first["ais"].items():
            rs = [p["ais"][T] for p in parts]
            got["ais"][T] = r0._replace(log_px=_lme([r.log_px for r in rs]),
                                        stderr=np.mean([r.stderr for r in rs], axis=0),
                                        accept=np.mean([r.accept for r in rs], axis=0),
                                        seconds=sum(r.seconds for r in rs))
        average["ais"] = np.mean([p["ais"][max(first["ais"])].log_px for p in parts], axis=0)
    if "hmc" in first:
        hs = [p["hmc"] for p in parts]
        got["hmc"] = hs[0]._replace(log_px=_lme([h.log_px for h in hs]),
                                    stderr=np.mean([h.stderr for h in hs], axis=0),
                                    accept=float(np.mean([h.accept for h in hs])),
                                    seconds=sum(h.seconds for h in hs))
        average["hmc"] = np.mean([h.log_px for h in hs], axis=0)
    return got, average


def load_target(run_dir: Path, data_dir: str | None) -> Any:
    """The run to evaluate, by run type. Only VAE runs (``varbayes vae train``) exist now; a
    new run type adds a branch here returning an object with the same fields as
    :class:`inference.commands.vae.Run` (``mod``, ``vae``, ``header``, ``data``)."""
    from inference.commands.vae import load_run

    if not (run_dir / "checkpoint.npz").is_file():
        raise VarbayesError(f"no checkpoint.npz in {run_dir}: pass the --out folder of a "
                            "'varbayes vae train' run")
    return load_run(run_dir, data_dir)


def _evidence(args: argparse.Namespace, verbose: bool = True) -> int:
    names = [s.strip() for s in args.estimators.split(",") if s.strip()]
    bad = [s for s in names if s not in ESTIMATORS]
    check(not bad, f"unknown estimator(s) {', '.join(bad)}: choose from {', '.join(ESTIMATORS)}")
    check(args.k >= 1, f"--k must be >= 1, got {args.k}")
    check(args.n_data is None or args.n_data >= 1, f"--n-data must be >= 1, got {args.n_data}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    if "ais" in names:
        steps, ais_opts = _ais_options(args)
    if "hmc" in names:
        hmc_opts = _hmc_options(args)
    check(args.n_theta >= 1, f"--n-theta must be >= 1, got {args.n_theta}")
    run_dir = Path(args.run_dir)
    run = load_target(run_dir, args.data_dir)
    out = out_dir(args.out)
    backend = run.header["backend"]
    ks = [j for j in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if j < args.k]
    runs = theta_runs(run, run_dir, args.n_theta, args.seed)
    parts = [_compute(r, names, args, ks, steps if "ais" in names else [],
                      ais_opts if "ais" in names else None,
                      hmc_opts if "hmc" in names else None, seed=args.seed + s)
             for s, r in enumerate(runs)]
    got, average = _combine_theta(parts)
    res, seconds = got["is"], got["is_seconds"]
    quad, ais_res, hmc_res = got.get("quadrature"), got.get("ais"), got.get("hmc")
    n = len(res.log_px)
    metrics: dict[str, Any] = {"n_data": n, "k": args.k, "backend": backend}
    if len(runs) > 1:
        metrics.update({"bayesian": True, "n_theta": len(runs)})
        for name, v in average.items():
            if name in names:
                metrics[f"{name}_average"], metrics[f"{name}_average_stderr"] = _mean_se(v)
    if "is" in names:
        metrics["is"], metrics["is_stderr"] = _mean_se(res.log_px)
        metrics["is_seconds"] = seconds
        metrics["is_ess_mean"] = float(res.ess.mean())
        metrics["is_khat_max"] = float(np.nanmax(res.khat)) if args.k >= 5 else None
        metrics["is_khat_frac_above_0_7"] = (float(np.mean(res.khat > 0.7))
                                             if args.k >= 5 else None)
        for j, v in res.prefix.items():
            metrics[f"is_k{j}"] = float(v.mean())
    if "elbo" in names:
        metrics["elbo"], metrics["elbo_stderr"] = _mean_se(res.elbo)
        metrics["elbo_seconds"] = seconds
    if "quadrature" in names:
        metrics["quadrature"], metrics["quadrature_stderr"] = _mean_se(quad.log_px)
        metrics["quadrature_seconds"] = quad.seconds
        metrics["quadrature_refinement_max"] = float(quad.refinement.max())
    if "ais" in names:
        top = ais_res[steps[-1]]
        metrics["ais"], metrics["ais_stderr"] = _mean_se(top.log_px)
        metrics["ais_seconds"] = top.seconds
        metrics["ais_steps"], metrics["ais_chains"] = steps[-1], ais_opts.chains
        metrics["ais_schedule"], metrics["ais_init"] = ais_opts.schedule, ais_opts.init
        metrics["ais_accept_mean"] = float(top.accept.mean()) if top.accept.size else None
        metrics["ais_chain_stderr_mean"] = float(top.stderr.mean())
        for T, r in ais_res.items():
            metrics[f"ais_t{T}"] = float(r.log_px.mean())
            metrics[f"ais_t{T}_seconds"] = r.seconds
    if "hmc" in names:
        metrics["hmc"], metrics["hmc_stderr"] = _mean_se(hmc_res.log_px)
        metrics["hmc_seconds"] = hmc_res.seconds
        metrics["hmc_samples"], metrics["hmc_accept_mean"] = args.hmc_samples, hmc_res.accept
    write_metrics(out, metrics)
    _curve_figure(out, res)
    if "ais" in names:
        _ais_figure(out, ais_res, {n: metrics[n] for n in ("is", "elbo", "quadrature")
                                   if n in names})
    lines = [f"evidence on {n} test points of {run_dir} ({backend}, K={args.k}"
             + (f", {len(runs)} draws θ ~ q(θ): log E_q(θ) p(x|θ); ELBO averaged over θ):"
                if len(runs) > 1 else "):")]
    for name in names:
        lines.append(f"  {name:<5} {metrics[name]:.3f} ± {metrics[name + '_stderr']:.3f} nats "
                     f"per datapoint ({metrics[name + '_seconds']:.1f} s)")
    if "is" in names and args.k >= 5:
        lines.append(f"  Pareto k̂ > 0.7 for {100 * metrics['is_khat_frac_above_0_7']:.1f}% "
                     f"of datapoints; mean ESS {metrics['is_ess_mean']:.1f} of {args.k}")
    lines.append(f"-> {out}")
    if verbose:
        print("\n".join(lines))
    return 0


def demo_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """The ``evidence`` part of ``varbayes demo``: ELBO, IS and quadrature on the demo's VAE.

    Runs after the ``vae`` part, whose run folder is ``out/../vae``.
    """
    from inference.cli import build_parser

    k, n = ("200", "60") if quick else ("2000", "360")
    args = build_parser().parse_args(["evidence", str(out.parent / "vae"), "--estimators",
                                      "elbo,is,quadrature", "--k", k, "--n-data", n,
                                      "--seed", str(seed), "--out", str(out), "--quiet"])
    _evidence(args, verbose=False)
    m = json.loads((out / "metrics.json").read_text())
    return {key: float(m[key]) for key in ("elbo", "is", "quadrature", "is_seconds",
                                           "quadrature_seconds", "n_data", "k")}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes evidence``."""
    from inference.cli import add_common, add_data_dir

    p = sub.add_parser("evidence", help="marginal-likelihood estimates for a trained run",
                       description="Estimate log p(x) per test datapoint (nats) for a trained "
                                   "VAE run: the ELBO, importance sampling with the guide "
                                   "as proposal (the IWAE bound), annealed importance "
                                   "sampling (ais), the AEVB appendix-D HMC estimator (hmc) "
                                   "and, for latent size <= 2, quadrature (exact to about "
                                   "1e-6 nats).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'varbayes vae train'")
    p.add_argument("--estimators", default="elbo,is",
                   help=f"comma-separated, from {', '.join(ESTIMATORS)} (default elbo,is)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per datapoint")
    p.add_argument("--n-data", type=int, default=None,
                   help="first N test datapoints (default all)")
    p.add_argument("--batch-size", type=int, default=500, help="datapoints per batch")
    p.add_argument("--chunk", type=int, default=100, help="samples drawn at once (memory)")
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
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_evidence)
