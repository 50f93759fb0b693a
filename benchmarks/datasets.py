"""Loading and per-epoch binarization costs.

* seconds to load and verify each dataset found in the data directory;
* dynamic binarization of all of MNIST train (60000×784), our numpy route against
  ``torch.bernoulli`` and ``jax.random.bernoulli`` in the same run, as ratios.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks._timing import interleaved_medians
from varbayes.inference.data import datasets
from varbayes.models.errors import VarbayesError


def run(quick: bool) -> dict[str, float]:
    """Return load seconds per dataset and binarization ratios (ours / other)."""
    metrics: dict[str, float] = {}
    x = None
    for name in datasets.DATASETS:
        t0 = time.perf_counter()
        try:
            d = datasets.load(name)
        except VarbayesError:
            continue  # not present in this data dir
        metrics[f"load_{name}_seconds"] = time.perf_counter() - t0
        if name == "mnist":
            x = d.x_train
    if x is None:  # no MNIST here: use digits tiled to MNIST's size
        x = np.resize(datasets.load("digits").x_train, (60000, 784))
    if quick:
        x = x[:5000]
    import jax
    import torch

    rng = np.random.default_rng(0)
    xt = torch.from_numpy(x)
    xj = jax.numpy.asarray(x)
    key = jax.random.key(0)
    jax_bern = jax.jit(lambda k, p: jax.random.bernoulli(k, p).astype(p.dtype))
    med = interleaved_medians({
        "numpy": lambda: datasets.dynamic_binarize(x, rng),
        "torch": lambda: torch.bernoulli(xt),
        "jax": lambda: jax_bern(key, xj).block_until_ready(),
    }, repeats=3 if quick else 7)
    metrics.update({f"binarize_{k}_seconds": v for k, v in med.items()})
    metrics["binarize_numpy_over_torch"] = med["numpy"] / med["torch"]
    metrics["binarize_numpy_over_jax"] = med["numpy"] / med["jax"]
    return metrics
