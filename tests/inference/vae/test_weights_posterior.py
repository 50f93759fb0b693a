"""NUTS vs SVI on a tiny Bayesian decoder: the result's shape and the invariant summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varbayes.inference.vae.weights_posterior import INVARIANT, plot_overlay, weights_posterior
from varbayes.models.errors import VarbayesError


@pytest.mark.slow
@pytest.mark.slow  # NUTS compile + sampling: about 70 s on the loaded 2-core machine
def test_tiny_weights_posterior(tmp_path):
    rng = np.random.default_rng(0)
    # 12 images of 6 pixels from two prototypes with flip noise
    proto = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], np.float32)
    x = np.abs(proto[rng.integers(0, 2, 12)] - (rng.random((12, 6)) < 0.1)).astype(np.float32)
    r = weights_posterior(x, hidden=2, svi_epochs=200, num_chains=1, num_warmup=100,
                          num_samples=150, max_tree_depth=5, seed=0)
    assert r.nuts.posterior[INVARIANT].shape == (1, 150, 6)
    assert r.nuts.posterior["z"].shape == (1, 150, 12, 2)  # latents sampled jointly
    assert r.svi.posterior[INVARIANT].shape == (1, 150, 6)
    s = r.summary
    print(json.dumps(s))
    assert 0 <= s["predictive_pixel_abs_diff"] < 0.2
    # the data pin the output biases down: both posteriors agree on their means roughly
    assert s["out_bias_mean_abs_diff"] < 1.0 and s["out_bias_sd_ratio_median"] > 0
    assert plot_overlay(r, tmp_path, n=4).stat().st_size > 1000


def test_bad_input():
    with pytest.raises(VarbayesError, match="2 <= N <= 500"):
        weights_posterior(np.zeros((1, 4), np.float32))
    with pytest.raises(VarbayesError, match="hidden must be >= 1"):
        weights_posterior(np.zeros((4, 4), np.float32), hidden=0)
