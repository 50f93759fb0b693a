"""The signal-to-noise ratio of the guide's gradient under IWAE and DReG, against K.

Run from the repository root: ``python docs/figures/vae/iwae_snr.py``. Writes
``iwae_snr.png`` and ``iwae_snr.json`` beside this file (about a minute on 2 cores).

Model z ~ N(θ, 1), x | z ~ N(z, 1) with θ = 0.3, one datapoint x = 1; guide
q(z|x) = N(a x + b, s²) at a = 0.3, b = 0.2, s = 1 (not the posterior N(0.65, 0.5)). For each
K, R = 10,000 independent single-datapoint gradients of the K-sample objective
(:func:`varbayes.inference.vi.iwae.numpyro_iwae`) give SNR = |mean| / std per parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist

from varbayes.inference.vi.iwae import numpyro_iwae

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
KS = (1, 3, 10, 30, 100, 300)
R = 10_000
PARAMS = {"theta": 0.3, "a": 0.3, "b": 0.2, "s": 1.0}


def model(x):
    t = numpyro.param("theta", 0.0)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Normal(t, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    a, b = numpyro.param("a", 0.0), numpyro.param("b", 0.0)
    s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("z", dist.Normal(a * x + b, s))


def snr(k: int, dreg: bool) -> dict[str, float]:
    """SNR of every parameter's gradient over R draws of the K-sample objective."""
    obj = numpyro_iwae(k, dreg)
    x = jnp.array([1.0])
    params = {n: jnp.float32(v) for n, v in PARAMS.items()}

    def grad(key):
        return jax.grad(lambda p: -obj.loss(key, p, model, guide, x))(params)

    g = jax.jit(jax.vmap(grad))(jax.random.split(jax.random.PRNGKey(k), R))
    return {n: float(abs(np.mean(v)) / np.std(v)) for n, v in g.items()}


def main() -> None:
    out = {name: {str(k): snr(k, name == "dreg") for k in KS} for name in ("iwae", "dreg")}
    (HERE / "iwae_snr.json").write_text(json.dumps(out, indent=1))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharex=True)
    for ax, (param, label) in zip(axes, (("b", "guide offset b (φ)"),
                                         ("s", "guide scale s (φ)"),
                                         ("theta", "model mean θ")), strict=True):
        for name, style, shown in (("iwae", "o-", "IWAE"), ("dreg", "s-", "DReG")):
            ax.plot(KS, [out[name][str(k)][param] for k in KS], style, label=shown)
        if param != "theta":  # the two estimators share θ's gradient
            first = out["iwae"]["1"][param]
            ax.plot(KS, [first / np.sqrt(k) for k in KS], ":", color="0.5", label="∝ 1/√K")
            ax.axhline(1 / np.sqrt(R), color="0.7", lw=0.8)  # what pure noise reads as
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("K (samples per datapoint)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient SNR = |mean| / std")
    axes[0].legend(fontsize=8)
    fig.suptitle("Signal-to-noise ratio of one datapoint's gradient, 10,000 draws per point",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "iwae_snr.png", dpi=110)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
