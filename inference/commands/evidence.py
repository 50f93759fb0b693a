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

ESTIMATORS = ("elbo", "is", "quadrature")


def vae_batches(run: Any, n_data: int | None, batch_size: int) -> list[evidence.Batch]:
    """``(args, kwargs)`` batches of the run's test set for its model and guide."""
    from inference.commands.vae import arrays_for

    x, y = run.data.x_test, run.data.y_test
    n = len(x) if n_data is None else min(int(n_data), len(x))
    x, c = arrays_for(run.vae.config, x[:n], None if y is None else y[:n])
    if run.header["backend"] == "pyro":
        import torch

        arr = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    else:
        import jax.numpy as jnp

        arr = lambda a: None if a is None else jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return [((run.vae, arr(x[i:i + batch_size]), arr(None if c is None else c[i:i + batch_size])),
             {}) for i in range(0, n, batch_size)]


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


def _evidence(args: argparse.Namespace, verbose: bool = True) -> int:
    from inference.commands.vae import load_run

    names = [s.strip() for s in args.estimators.split(",") if s.strip()]
    bad = [s for s in names if s not in ESTIMATORS]
    check(not bad, f"unknown estimator(s) {', '.join(bad)}: choose from {', '.join(ESTIMATORS)}")
    check(args.k >= 1, f"--k must be >= 1, got {args.k}")
    check(args.n_data is None or args.n_data >= 1, f"--n-data must be >= 1, got {args.n_data}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    run_dir = Path(args.run_dir)
    if not (run_dir / "checkpoint.npz").is_file():
        raise VarbayesError(f"no checkpoint.npz in {run_dir}: pass the --out folder of a "
                            "'varbayes vae train' run")
    run = load_run(run_dir, args.data_dir)
    out = out_dir(args.out)
    batches = vae_batches(run, args.n_data, args.batch_size)
    backend = run.header["backend"]
    mod = run.mod
    ks = [j for j in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if j < args.k]
    t0 = time.perf_counter()
    res = evidence.importance_sampling(mod.model, mod.guide, batches, args.k, backend=backend,
                                       chunk=args.chunk, seed=args.seed, prefix_ks=ks,
                                       progress=lambda b: progress(b, desc="evidence"))
    seconds = time.perf_counter() - t0
    n = len(res.log_px)
    if "quadrature" in names:
        quad = _vae_quadrature(run, batches)
    metrics: dict[str, Any] = {"n_data": n, "k": args.k, "backend": backend}
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
    write_metrics(out, metrics)
    _curve_figure(out, res)
    lines = [f"evidence on {n} test points of {run_dir} ({backend}, K={args.k}):"]
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
                                   "as proposal (the IWAE bound) and, for latent size <= 2, "
                                   "quadrature (exact to about 1e-6 nats).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'varbayes vae train'")
    p.add_argument("--estimators", default="elbo,is",
                   help=f"comma-separated, from {', '.join(ESTIMATORS)} (default elbo,is)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per datapoint")
    p.add_argument("--n-data", type=int, default=None,
                   help="first N test datapoints (default all)")
    p.add_argument("--batch-size", type=int, default=500, help="datapoints per batch")
    p.add_argument("--chunk", type=int, default=100, help="samples drawn at once (memory)")
    add_common(p)
    add_data_dir(p)
    p.set_defaults(func=_evidence)
