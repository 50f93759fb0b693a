"""The AEVB appendix-D estimator's error against the latent dimension, on PPCA.

``python docs/figures/evidence/hmc_vs_dim.py`` writes ``hmc_vs_dim.png`` beside this file and
prints the table in docs/evidence.md. PPCA with D = 2K + 4, σ = 0.5, 16 simulated datapoints
per K; L = 1000 posterior draws per datapoint (500 fit the Gaussian, 500 score it).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from varbayes.inference.evidence import hmc as he
from varbayes.inference.io import save_figure
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate
from varbayes.models.ppca import numpyro_model as m


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ks, bias, mae = (1, 2, 4, 8, 16, 32), [], []
    print("| K | mean error (nats) | mean abs error | max abs error |")
    print("|---|---|---|---|")
    for K in Ks:
        p = random_ppca(D=2 * K + 4, K=K, sigma=0.5, seed=0, guide_scale=1.5)
        x, _ = simulate(p, 16, seed=1)
        r = he.hmc_evidence(m.model, m.guide, [((p, jnp.asarray(x, jnp.float32)), {})],
                            he.HMCEvidenceOptions(n_samples=1000, n_warmup=200))
        err = r.log_px - exact_log_evidence(p, x)
        bias.append(err.mean())
        mae.append(np.abs(err).mean())
        print(f"| {K} | {err.mean():+.3f} | {np.abs(err).mean():.3f} | {np.abs(err).max():.3f} |",
              flush=True)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(Ks, mae, "o-", label="mean |error|")
    ax.plot(Ks, bias, "s--", label="mean error")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent dimension K")
    ax.set_ylabel("estimate − exact log p(x) (nats)")
    ax.set_title("AEVB appendix-D estimator on PPCA, L = 1000")
    ax.legend()
    save_figure(fig, Path(__file__).parent / "hmc_vs_dim.png")


if __name__ == "__main__":
    main()
