"""One entry point for every Ising denoising method, all returning :class:`PosteriorResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from varbayes.inference.ising import cavi
from varbayes.inference.ising.results import PosteriorResult, mpm
from varbayes.models.errors import check
from varbayes.models.ising import exact
from varbayes.models.ising.noise import Noise, make_posterior

METHODS = ("cavi", "svi", "svi-score", "gibbs", "icm", "exact")


class Options(NamedTuple):
    """Settings shared by the methods; ``iters=None`` picks each method's default."""

    schedule: str = "checkerboard"
    damping: float = 1.0
    iters: int | None = None
    tol: float = 1e-6
    backend: str = "numpyro"
    lr: float = 0.05
    particles: int = 16
    chains: int = 4
    burn_in: int = 50
    seed: int = 0


#: Iterations when ``--iters`` is not given: sweeps (CAVI, ICM), steps (SVI), kept sweeps (Gibbs).
DEFAULT_ITERS = {"cavi": 200, "svi": 3000, "svi-score": 500, "gibbs": 200, "icm": 100,
                 "exact": 1}


def run_exact(observed: np.ndarray, noise: Noise, J) -> PosteriorResult:
    """Exact marginals and ``log Σ_z p̃(z, x)`` by the transfer matrix."""
    post = make_posterior(observed, noise, J)
    t0 = time.perf_counter()
    res = exact.transfer_matrix(post)
    mean = 2.0 * res.marginals - 1.0
    return PosteriorResult(
        method="exact", mean=mean, estimate=mpm(mean), elbo=float("nan"),
        log_evidence=res.log_partition, history=np.array([res.log_partition]),
        history_label="log Σ_z p̃(z, x) (nats)", iterations=1,
        seconds=time.perf_counter() - t0)


def run_method(method: str, observed: np.ndarray, noise: Noise, J,
               opts: Options | None = None) -> PosteriorResult:
    """Run ``method`` (one of :data:`METHODS`) on an observation.

    Parameters
    ----------
    observed : (H, W) noisy image (real for Gaussian noise, ±1 for flips).
    noise : the noise model; ``J`` a scalar coupling or ``(horizontal, vertical)`` arrays.
    opts : schedule, damping, iterations, backend, seed...
    """
    opts = Options() if opts is None else opts
    check(method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    iters = DEFAULT_ITERS[method] if opts.iters is None else opts.iters
    check(iters >= 1, f"--iters must be >= 1, got {iters}")
    cavi.validate_schedule(opts.schedule, opts.damping)
    if method == "exact":
        return run_exact(observed, noise, J)
    if method in ("svi", "svi-score"):
        from varbayes.inference.ising import svi

        loss = "closed" if method == "svi" else "score"
        return svi.fit(opts.backend, observed, noise, J, loss=loss, steps=iters,
                       lr=opts.lr, num_particles=opts.particles, seed=opts.seed)
    post = make_posterior(observed, noise, J)
    if method == "cavi":
        return cavi.run(post, schedule=opts.schedule, damping=opts.damping,
                        max_iters=iters, tol=opts.tol)
    from varbayes.inference.ising import gibbs  # imports JAX: only when needed

    if method == "icm":
        return gibbs.icm(post, max_iters=iters)
    import jax

    return gibbs.sample(jax.random.key(opts.seed), post, num_samples=iters,
                        burn_in=opts.burn_in, num_chains=opts.chains)


#: What :func:`compare_methods` runs: (label, method, option overrides).
COMPARE_RUNS = (
    ("icm", "icm", {}),
    ("cavi-parallel", "cavi", {"schedule": "parallel", "damping": 0.5, "iters": 15}),
    ("cavi-checkerboard", "cavi", {"schedule": "checkerboard", "damping": 1.0}),
    ("svi", "svi", {}),
    ("svi-score", "svi-score", {}),
    ("gibbs", "gibbs", {}),
    ("exact", "exact", {}),
)
#: Largest grid (sites) on which :func:`compare_methods` runs the noisy score-function SVI.
SCORE_MAX_SITES = 1024


def compare_methods(observed: np.ndarray, noise: Noise, J, base: Options | None = None, *,
                    progress: Callable[[Iterable], Iterable] = iter
                    ) -> dict[str, PosteriorResult]:
    """Every method of :data:`COMPARE_RUNS` on one observation, label -> result.

    Exact inference is left out when the grid is too large for the transfer matrix, and the
    noisy score-function SVI when it has more than :data:`SCORE_MAX_SITES` sites.
    """
    base = Options() if base is None else base
    H, W = np.shape(observed)
    runs = [r for r in COMPARE_RUNS
            if not (r[1] == "exact" and min(H, W) > exact.MAX_ROWS)
            and not (r[1] == "svi-score" and H * W > SCORE_MAX_SITES)]
    return {label: run_method(method, observed, noise, J, base._replace(**over))
            for label, method, over in progress(runs)}
