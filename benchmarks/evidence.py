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

The best hand-written code we know for the same IS (``jax_hand_*``): the VAE's own equinox
networks called directly in one jit per batch, the draws in a ``lax.map`` over chunks, the
log density written out; ``numpyro_over_jax_hand`` compares our route with it.

AIS: seconds per transition on the first batch (100 images, 16 chains and the 4 pilot
chains, 10 leapfrog steps, 50 transitions, started from the guide), after an untimed run
with the same settings. Its roofline is the leapfrog gradients' products (the decoder
forward and its input gradient for every chain) at the sgemm rate of those shapes.
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
from varbayes.inference.evidence.annealing import PILOT_CHAINS


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
    out = {"seconds": seconds, "peak_rss_mib": rss, "log_px": float(res.log_px.mean()),
           "n": n, "k": k}
    if backend == "numpyro":
        out["hand_seconds"], out["hand_log_px"] = _hand_jax_is(vae, x, k, chunk=100)
    return out | _ais_child(mod, batches[0], backend, quick)


def _hand_jax_is(vae: object, x: object, k: int, chunk: int) -> tuple[float, float]:
    """The same IS written by hand in JAX (the VAE's own equinox networks, one jit per batch
    of 100 images, its K draws in a ``lax.map`` over chunks): seconds of the timed run and
    the mean estimate (nats)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    chunk = min(chunk, k)  # K is a multiple of it (5000 and 100; quick: 50 and 50)

    @jax.jit
    def batch(key: jax.Array, enc: object, dec: object, xb: jax.Array) -> jax.Array:
        loc, scale = enc(xb)  # (M, d) each

        def one(c: jax.Array) -> jax.Array:  # (chunk, M) log w, the 2π terms cancelled
            eps = jax.random.normal(jax.random.fold_in(key, c), (chunk, *loc.shape))
            z = loc + scale * eps
            logits, _ = dec(z)
            ll = -(jnp.clip(logits, 0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
                   - logits * xb).sum(-1)
            return ll - 0.5 * (z**2).sum(-1) + (0.5 * eps**2 + jnp.log(scale)).sum(-1)

        log_w = jax.lax.map(one, jnp.arange(k // chunk)).reshape(k // chunk * chunk, -1)
        return jax.nn.logsumexp(log_w, axis=0) - jnp.log(log_w.shape[0])

    xs = [jnp.asarray(x[i:i + 100]) for i in range(0, len(x), 100)]
    key = jax.random.key(0)
    batch(key, vae.encoder, vae.decoder, xs[0]).block_until_ready()  # compile
    t0 = time.perf_counter()
    est = [batch(jax.random.fold_in(key, b), vae.encoder, vae.decoder, xb)
           for b, xb in enumerate(xs)]
    est = np.concatenate([np.asarray(e) for e in est])
    return time.perf_counter() - t0, float(est.mean())


#: AIS timing: transitions, chains and leapfrog steps (full; quick).
AIS_SIZES = {False: (51, 16, 10), True: (6, 4, 2)}


def _ais_child(mod: object, batch: tuple, backend: str, quick: bool) -> dict[str, float]:
    """Seconds per AIS transition on the first batch (init from the guide), after a
    warm-up run with the same settings (which compiles the NumPyro route)."""
    from varbayes.inference.evidence.ais import ais
    from varbayes.inference.evidence.annealing import AISOptions

    n_steps, chains, n_leapfrog = AIS_SIZES[quick]
    options = AISOptions(n_steps=n_steps, chains=chains, n_leapfrog=n_leapfrog, init="guide")
    ais(mod.model, mod.guide, [batch], options, backend=backend)
    t0 = time.perf_counter()
    res = ais(mod.model, mod.guide, [batch], options, backend=backend)
    seconds = time.perf_counter() - t0
    return {"ais_seconds_per_transition": seconds / (n_steps - 1),
            "ais_log_px": float(res.log_px.mean())}


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
        metrics[f"{backend}_ais_seconds_per_transition"] = r["ais_seconds_per_transition"]
        metrics[f"{backend}_ais_log_px"] = r["ais_log_px"]
        if "hand_seconds" in r:
            metrics["jax_hand_seconds"], metrics["jax_hand_log_px"] = (r["hand_seconds"],
                                                                        r["hand_log_px"])
    metrics["pyro_over_numpyro_seconds"] = metrics["pyro_seconds"] / metrics["numpyro_seconds"]
    metrics["numpyro_over_jax_hand"] = metrics["numpyro_seconds"] / metrics["jax_hand_seconds"]
    x_dim = 64 if quick else 784
    gflop, shapes = gemms(quick, x_dim, rows=min(100, int(metrics["k"])) * 100)
    roof = roofline(shapes, repeats=3 if quick else 7, inner=1 if quick else 5)
    rates = {b: roof[f"sgemm_gflops_{b}"] for b in ("torch", "jax")}
    metrics["gflop"] = gflop
    metrics |= {f"sgemm_gflops_{b}": r for b, r in rates.items()}
    metrics["roofline_seconds"] = gflop / max(rates.values())
    for name in (*BACKENDS, "jax_hand"):
        metrics[f"{name}_over_roofline"] = (metrics[f"{name}_seconds"]
                                            / metrics["roofline_seconds"])
    # AIS: the roofline of one transition is its leapfrog gradients (forward and input
    # gradient of the decoder) for every chain, the pilot chains included, of one batch
    gflop, shapes = ais_gemms(quick, x_dim)
    roof = roofline(shapes, repeats=3 if quick else 7, inner=1 if quick else 20)
    metrics["ais_gflop_per_transition"] = gflop
    metrics |= {f"ais_sgemm_gflops_{b}": roof[f"sgemm_gflops_{b}"] for b in ("torch", "jax")}
    metrics["ais_roofline_seconds_per_transition"] = gflop / max(
        roof["sgemm_gflops_torch"], roof["sgemm_gflops_jax"])
    for backend in BACKENDS:
        metrics[f"{backend}_ais_over_roofline"] = (
            metrics[f"{backend}_ais_seconds_per_transition"]
            / metrics["ais_roofline_seconds_per_transition"])
    return metrics


def ais_gemms(quick: bool, x_dim: int) -> tuple[float, list[tuple[int, int, int]]]:
    """GFLOP of one AIS transition's leapfrog gradients on one batch of 100 images, and the
    (m, k, n) of one gradient's products: the decoder forward, then its input gradient
    (the transposed products; no weight gradients)."""
    _, n, _, hidden, z = _sizes(quick)
    _, chains, n_leapfrog = AIS_SIZES[quick]
    rows = (chains + PILOT_CHAINS) * min(n, 100)
    dec = list(itertools.pairwise((z, *hidden[::-1], x_dim)))
    shapes = [(rows, a, b) for a, b in dec] + [(rows, b, a) for a, b in dec[::-1]]
    return n_leapfrog * sum(2 * m * k_ * n_ for m, k_, n_ in shapes) / 1e9, shapes
