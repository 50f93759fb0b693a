"""Makes weights_marginals.png and the NUTS table of docs/models/bayesian_vae.md.

Run from the repository root: ``python docs/figures/bayesian_vae/nuts_crosscheck.py``
(writes runs/bvae/nuts/metrics.json and weights_marginals.png).
"""

import json
import time

import numpy as np

from varbayes.inference.data import datasets
from varbayes.inference.io import out_dir, set_quiet, write_metrics
from varbayes.inference.vae.weights_posterior import plot_overlay, weights_posterior

set_quiet(True)
d = datasets.load("digits")
x = datasets.dynamic_binarize(d.x_train[:40], np.random.default_rng(0))
t = time.perf_counter()
r = weights_posterior(x, hidden=3, svi_epochs=3000, num_chains=2, num_warmup=300,
                      num_samples=300, max_tree_depth=8, seed=0)
out = out_dir("runs/bvae/nuts")
s = dict(r.summary, seconds=time.perf_counter() - t)
write_metrics(out, s)
plot_overlay(r, out)
print(json.dumps(s))
