"""Check the appendix-D scores of a ``varbayes reproduce aevb-fig3`` run's final models with
an estimator that shares nothing with it: importance sampling with the prior N(0, I) as the
proposal (no encoder, no chains), K draws per image. With N_z = 3 the prior covers the
posterior, so for large K this is a consistent estimate of log p(x) and, for any K, a lower
bound in expectation. An appendix-D score far below it means the estimator's chains did
not reach the posterior.

``python docs/figures/reproductions/fig3/crosscheck.py RUN_DIR [K]`` writes
``crosscheck.json`` beside this file: per training-set size and method, the mean and
standard error (nats) over the first 500 test images of the prior-IS estimate (with
K/10 draws too, to show it has settled), and the appendix-D estimate paired with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from varbayes.inference.evidence.importance import importance_sampling
from varbayes.inference.vae.reproduce_fig3 import log_evidence, mean_se
from varbayes.inference.vae.run import exported, load_run, run_batches
from varbayes.inference.vi.checkpoint import load_checkpoint
from varbayes.models.vae import numpyro_model


def prior_guide(vae: Any, x: Any, c: Any = None, n_data: int | None = None) -> None:
    """z ~ N(0, I) under the model's data plate: the proposal of prior IS."""
    m = x.shape[0]
    with numpyro.plate("data", n_data or m, subsample_size=m):
        numpyro.sample("z", dist.Normal(jnp.zeros((m, vae.config.z_dim)), 1.0).to_event(1))


def main(run_dir: Path, k: int, sizes: tuple[int, ...] = (1000, 50000)) -> dict:
    out: dict = {}
    for n in sizes:
        base = run_dir / "runs" / f"mnist-n{n}-z3"
        aevb = load_run(f"{base}-AEVB")
        x = aevb.data.x_test[:500]
        weights, _ = exported(load_checkpoint(Path(f"{base}-MCEM") / "checkpoint.npz")[0])
        vaes = {"AEVB": aevb.vae, "wake-sleep": load_run(f"{base}-wake-sleep").vae,
                "MCEM": numpyro_model.build(aevb.vae.config, weights)}
        for m, vae in vaes.items():
            r = importance_sampling(numpyro_model.model, prior_guide,
                                    run_batches(vae, "numpyro", x, None, 100), k,
                                    prefix_ks=(k // 10,), diagnostics=False, seed=2)
            d = log_evidence(vae, x, 1)  # fresh chains (the run scored with seed 9)
            out[f"n{n}_{m}"] = {"prior_is": mean_se(np.asarray(r.log_px)),
                                f"prior_is_k{k // 10}": mean_se(np.asarray(r.prefix[k // 10])),
                                "appendix_d": mean_se(d),
                                "appendix_d_minus_prior_is": mean_se(d - np.asarray(r.log_px))}
            print(m, n, out[f"n{n}_{m}"], flush=True)
    return out


if __name__ == "__main__":
    run = Path(sys.argv[1])
    result = main(run, int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    (Path(__file__).parent / "crosscheck.json").write_text(json.dumps(result, indent=1) + "\n")
