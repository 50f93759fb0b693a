"""BDMC on PPCA: forward AIS (lower) and reverse AIS (upper) bounds against T.

``python docs/figures/evidence/bdmc_ppca.py`` writes ``bdmc_ppca.png`` beside this file and
prints the table in docs/evidence.md. PPCA D = 10, K = 3, σ = 0.5, 64 datapoints simulated
from the model (the reverse chains start at the z that generated each x); 8 chains per
datapoint (plus 4 pilot chains), sigmoid schedule, start at the prior, NumPyro backend.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from varbayes.inference.evidence import ais
from varbayes.inference.io import save_figure
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate
from varbayes.models.ppca import numpyro_model as m


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = random_ppca(D=10, K=3, sigma=0.5, seed=0)
    x, z = simulate(p, 64, seed=1)
    exact = exact_log_evidence(p, x)
    batch = [((p, jnp.asarray(x, jnp.float32)), {})]
    Ts, lo, hi = (3, 10, 30, 100, 300), [], []
    print("| T | forward − exact | reverse − exact | gap | seconds (fwd) |")
    print("|---|---|---|---|---|")
    for T in Ts:
        o = ais.AISOptions(n_steps=T, chains=8)
        f = ais.ais(m.model, m.guide, batch, o)
        r = ais.ais(m.model, m.guide, batch, o, posterior=[z])
        df, dr = f.log_px - exact, r.log_px - exact
        se = lambda v: v.std(ddof=1) / np.sqrt(len(v))  # noqa: E731
        lo.append(df.mean())
        hi.append(dr.mean())
        print(f"| {T} | {df.mean():+.3f} ± {se(df):.3f} | {dr.mean():+.3f} ± {se(dr):.3f} | "
              f"{dr.mean() - df.mean():.3f} | {f.seconds:.1f} |", flush=True)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(Ts, lo, "o-", label="forward AIS (lower bound)")
    ax.plot(Ts, hi, "s-", label="reverse AIS (upper bound)")
    ax.axhline(0, color="grey", ls="--", label="exact")
    ax.set_xscale("log")
    ax.set_xlabel("intermediate distributions T")
    ax.set_ylabel("mean estimate − exact (nats)")
    ax.set_title("BDMC on PPCA (K = 3)")
    ax.legend()
    save_figure(fig, Path(__file__).parent / "bdmc_ppca.png")


if __name__ == "__main__":
    main()
