"""Importance sampling (the IWAE bound) with K=5000 on 1000 MNIST test images, both backends:
seconds and peak memory.

The VAE is 784-200-200-50 (tanh, Bernoulli decoder) with freshly initialised weights (seed
0, no training: the cost of IS does not depend on the weights' values), the test images
binarized once with a fixed seed. Each backend runs in its own subprocess so that its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: the
runtime, the data and the IS buffers) is its own. Batches of 100 images, K drawn in chunks
of 100. Quick mode: the bundled digits, 20 images, K=50, a 64-64-2 VAE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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

    name, n, k, hidden, z = (("digits", 20, 50, (64, 64), 2) if quick
                             else ("mnist", 1000, 5000, (200, 200), 50))
    d = datasets.load(name, os.environ.get("VARBAYES_DATA"))
    x = datasets.dynamic_binarize(d.x_test[:n], np.random.default_rng(0)).astype(np.float32)
    config = VAEConfig(x_dim=x.shape[1], z_dim=z, hidden=hidden)
    mod = model_module("vae", backend)
    if backend == "pyro":
        import torch

        torch.set_num_threads(2)
    vae = mod.build(config, seed=0)
    batches = make_batches((x,), 100, backend=backend, static=(vae,))
    # start the runtime and compile the chunk shape the timed run uses (not counted)
    evidence.importance_sampling(mod.model, mod.guide, batches[:1], min(k, 100),
                                 backend=backend, chunk=100, diagnostics=False)
    t0 = time.perf_counter()
    res = evidence.importance_sampling(mod.model, mod.guide, batches, k, backend=backend,
                                       chunk=100, diagnostics=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {"seconds": seconds, "peak_rss_mib": rss, "log_px": float(res.log_px.mean()),
            "n": n, "k": k}


def run(quick: bool) -> dict[str, float]:
    """Seconds and peak RSS (MiB) per backend, each in a fresh subprocess."""
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
    return metrics
