"""Importance sampling (the IWAE bound) with K=5000 on 1000 MNIST test images, both backends:
seconds, peak memory, and the fraction of the GEMM roofline.

The VAE is 784-200-200-50 (tanh, Bernoulli decoder) with freshly initialised weights (seed
0, no training: the cost of IS does not depend on the weights' values), the test images
binarized once with a fixed seed. Each backend runs in its own subprocess so that its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: the
runtime, the data and the IS buffers) is its own. Batches of 100 images, K drawn in chunks
of 100. Quick mode: the bundled digits, 20 images, K=50, a 64-64-2 VAE.

The roofline: ``gflop`` counts the matrix products of the run (the decoder for each of the
n·K draws, the encoder once per image), ``sgemm_gflops_torch`` / ``sgemm_gflops_jax`` time
those products' shapes (a chunk of 100 draws of 100 images: 10⁴ rows) as bare ``torch.mm``
and jitted ``jnp.dot`` calls, ``roofline_seconds`` is the work at the faster rate, and
``<backend>_over_roofline`` is the backend's seconds over it (1 is the limit; the elementwise
work, the log densities and the sampling, comes on top).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.vae import roofline
from varbayes.inference.backends import BACKENDS


def _child(backend: str, quick: bool) -> dict[str, float]:
    """Runs in the subprocess: load data and a fresh VAE, time IS, report memory."""
    import resource

    import numpy as np

    from varbayes.inference.backends import model_module
    from varbayes.inference.data import datasets
    from varbayes.inference.evidence import importance as evidence
    from varbayes.inference.evidence.batches import batches as make_batches
    from varbayes.models.vae.config import VAEConfig

    name, n, k, hidden, z = _sizes(quick)
    d = datasets.load(name, os.environ.get("VARBAYES_DATA"))
    x = datasets.dynamic_binarize(d.x_test[:n], np.random.default_rng(0)).astype(np.float32)
    config = VAEConfig(x_dim=x.shape[1], z_dim=z, hidden=hidden)
    mod = model_module("vae", backend)
    if backend == "pyro":
        import torch

        torch.set_num_threads(2)
    vae = mod.build(config, seed=0)
    batches = make_batches((x,), 100, backend=backend, static=(vae,))
    # start the runtime and compile the shapes the timed run uses (not counted): one batch
    # with the full K, as every batch of the timed run
    evidence.importance_sampling(mod.model, mod.guide, batches[:1], k, backend=backend,
                                 chunk=100, diagnostics=False)
    t0 = time.perf_counter()
    res = evidence.importance_sampling(mod.model, mod.guide, batches, k, backend=backend,
                                       chunk=100, diagnostics=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {"seconds": seconds, "peak_rss_mib": rss, "log_px": float(res.log_px.mean()),
            "n": n, "k": k}


def _sizes(quick: bool) -> tuple[str, int, int, tuple[int, ...], int]:
    """Dataset, images, K, hidden widths and latent size of the run."""
    return ("digits", 20, 50, (64, 64), 2) if quick else ("mnist", 1000, 5000, (200, 200), 50)


def gemms(quick: bool, x_dim: int, rows: int) -> tuple[float, list[tuple[int, int, int]]]:
    """GFLOP of the run's matrix products, and the decoder's (m, k, n) for ``rows`` draws."""
    _, n, k, hidden, z = _sizes(quick)
    enc = list(itertools.pairwise((x_dim, *hidden))) + [(hidden[-1], z)] * 2
    dec = list(itertools.pairwise((z, *hidden[::-1], x_dim)))
    flop = (2 * n * k * sum(a * b for a, b in dec)  # the decoder, once per draw
            + 2 * n * sum(a * b for a, b in enc))  # the encoder, once per image
    return flop / 1e9, [(rows, a, b) for a, b in dec]


def run(quick: bool) -> dict[str, float]:
    """Seconds and peak RSS (MiB) per backend, each in a fresh subprocess; the roofline."""
    metrics: dict[str, float] = {}
    for backend in BACKENDS:
        code = ("import json, sys; from benchmarks.evidence import _child; "
                f"print('RESULT' + json.dumps(_child({backend!r}, {quick!r})))")
        # benchmarks/ is not installed: the child imports it from the checkout's root
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                             cwd=Path(__file__).resolve().parents[1])
        line = [s for s in out.stdout.splitlines() if s.startswith("RESULT")][-1]
        r = json.loads(line[len("RESULT"):])
        metrics[f"{backend}_seconds"] = r["seconds"]
        metrics[f"{backend}_peak_rss_mib"] = r["peak_rss_mib"]
        metrics[f"{backend}_log_px"] = r["log_px"]
        metrics["n_images"], metrics["k"] = r["n"], r["k"]
    metrics["pyro_over_numpyro_seconds"] = metrics["pyro_seconds"] / metrics["numpyro_seconds"]
    x_dim = 64 if quick else 784
    gflop, shapes = gemms(quick, x_dim, rows=min(100, int(metrics["k"])) * 100)
    roof = roofline(shapes, repeats=3 if quick else 7, inner=1 if quick else 5)
    rates = {b: roof[f"sgemm_gflops_{b}"] for b in ("torch", "jax")}
    metrics["gflop"] = gflop
    metrics |= {f"sgemm_gflops_{b}": r for b, r in rates.items()}
    metrics["roofline_seconds"] = gflop / max(rates.values())
    for backend in BACKENDS:
        metrics[f"{backend}_over_roofline"] = (metrics[f"{backend}_seconds"]
                                               / metrics["roofline_seconds"])
    return metrics
