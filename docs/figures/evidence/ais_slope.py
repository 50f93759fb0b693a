"""What one AIS transition costs beyond its leapfrog gradients: the NumPyro route of
:func:`varbayes.ais` on the setting of ``benchmarks/evidence.py`` (100 binarized MNIST test
images, the 784-200-200-50 VAE, 16 chains and 4 pilot chains, 50 transitions from the
guide), timed with 1, 2 and 10 leapfrog steps.

``python docs/figures/evidence/ais_slope.py`` prints the best of three interleaved timings
in ms per transition and the straight line through them: the slope is one leapfrog
gradient, the intercept what a transition computes besides (0 when the start's densities
and gradients are carried from the previous transition).
"""

from __future__ import annotations

import os
import time

import numpy as np

from varbayes import ais
from varbayes.inference.data import datasets
from varbayes.inference.evidence.annealing import AISOptions
from varbayes.inference.evidence.batches import batches as make_batches
from varbayes.models.vae import numpyro_model as mod
from varbayes.models.vae.config import VAEConfig

STEPS = (1, 2, 10)


def main() -> None:
    d = datasets.load("mnist", os.environ.get("VARBAYES_DATA"))
    x = datasets.dynamic_binarize(d.x_test[:100], np.random.default_rng(0)).astype(np.float32)
    vae = mod.build(VAEConfig(x_dim=784, z_dim=50, hidden=(200, 200)), seed=0)
    b = list(make_batches((x,), 100, backend="numpyro", static=(vae,)))
    opts = {L: AISOptions(n_steps=51, chains=16, n_leapfrog=L, init="guide") for L in STEPS}
    for o in opts.values():  # compile
        ais(mod.model, mod.guide, b, o)
    ms: dict[int, list[float]] = {L: [] for L in STEPS}
    for _ in range(3):
        for L, o in opts.items():
            t = time.perf_counter()
            ais(mod.model, mod.guide, b, o)
            ms[L].append(1000 * (time.perf_counter() - t) / 50)
    best = np.array([min(ms[L]) for L in STEPS])
    slope, intercept = np.polyfit(np.array(STEPS, float), best, 1)
    for L, t in zip(STEPS, best, strict=True):
        print(f"{L:3d} leapfrog steps: {t:7.1f} ms per transition")
    print(f"per leapfrog gradient {slope:.1f} ms, besides the gradients {intercept:.1f} ms")


if __name__ == "__main__":
    main()
