"""Run in a subprocess by ``test_sharded.py``; writes JSON of per-datapoint results.

``python sharded_helper.py jax OUT``: in a process that sees 2 XLA devices, IS (K = 64) and
the ELBO of a tiny NumPyro VAE and AIS of NumPyro PPCA, each with ``devices`` 1 and 2, and
where the batches were placed; writes ``OUT/jax.json``.

``python sharded_helper.py ranks OUT``: IS and AIS of Pyro PPCA, split over the torch ranks
when ``torchrun`` started it (``ranks.init_from_env``); each rank writes
``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

N, BATCH = 21, 8  # batches of 8, 8 and a short 5


def _lists(d: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in d.items()}


def jax_devices() -> dict:
    """Per-point IS, ELBO and AIS with devices 1 and 2, and the placement of the batches."""
    import equinox as eqx
    import jax

    from varbayes.inference.evidence import ais, importance, parallel
    from varbayes.inference.evidence.batches import batches
    from varbayes.models.ppca import numpyro_model as ppca_model
    from varbayes.models.ppca import random_ppca, simulate
    from varbayes.models.vae import numpyro_model as vae_model
    from varbayes.models.vae.config import VAEConfig

    assert jax.device_count() == 2, jax.devices()
    vae = vae_model.build(VAEConfig(x_dim=12, z_dim=2, hidden=(8,)), seed=1)
    x = (np.random.default_rng(0).random((N, 12)) < 0.5).astype(np.float32)
    vb = batches((x, None), BATCH, static=(vae,))
    p = random_ppca(D=5, K=2, sigma=0.5, guide_scale=2.0)
    y, _ = simulate(p, 2 * BATCH, seed=1)
    pb = batches((y,), BATCH, static=(p,))
    opts = ais.AISOptions(n_steps=5, chains=3, n_leapfrog=2)
    out: dict = {}
    for d in (1, 2):
        r = importance.importance_sampling(vae_model.model, vae_model.guide, vb, 64, seed=3,
                                           chunk=16, devices=d, diagnostics=False)
        a = ais.ais(ppca_model.model, ppca_model.guide, pb, opts, seed=4, devices=d)
        out[str(d)] = _lists({"is": r.log_px, "elbo": r.elbo, "elbo_stderr": r.elbo_stderr,
                              "ess": r.ess, "ais": a.log_px, "ais_log_w": a.log_w,
                              "ais_accept": a.accept})
    mesh = parallel.data_mesh(vb, 2)
    placed = [parallel.place(b, mesh)[0] for b in vb]
    out["x_devices"] = [len(b[0][1].sharding.device_set) for b in placed]
    leaves = jax.tree_util.tree_leaves(eqx.filter(placed[0][0][0], eqx.is_array))
    out["weights_devices"] = sorted({len(a.sharding.device_set) for a in leaves})
    return out


def torch_ranks() -> dict:
    """Per-point IS (exact and wide guide) and AIS of Pyro PPCA on this rank's view."""
    from varbayes.inference import ranks
    from varbayes.inference.evidence import ais, importance
    from varbayes.inference.evidence.batches import batches
    from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate
    from varbayes.models.ppca import pyro_model as m

    ranks.init_from_env()
    exact = random_ppca(D=5, K=2, sigma=0.5)  # q(z|x) is the posterior: log w = log p(x)
    wide = exact._replace(s=2.0 * exact.s)
    y, _ = simulate(exact, N, seed=1)
    eb = batches((y,), BATCH, backend="pyro", static=(exact,))
    wb = batches((y,), BATCH, backend="pyro", static=(wide,))
    r = importance.importance_sampling(m.model, m.guide, eb, 16, backend="pyro", seed=1)
    w = importance.importance_sampling(m.model, m.guide, wb, 500, backend="pyro", seed=1,
                                       prefix_ks=(10,), diagnostics=False)
    a = ais.ais(m.model, m.guide, eb, ais.AISOptions(n_steps=3, chains=2, n_leapfrog=2,
                                                     init="guide"), backend="pyro", seed=1)
    return {"world": ranks.world(), "rank": ranks.rank(),
            **_lists({"exact": exact_log_evidence(exact, y), "is": r.log_px, "elbo": r.elbo,
                      "ess": r.ess, "wide_is": w.log_px, "wide_elbo": w.elbo,
                      "wide_elbo_stderr": w.elbo_stderr, "wide_is_k10": w.prefix[10],
                      "ais": a.log_px, "ais_log_w": a.log_w, "ais_accept": a.accept})}


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "jax":
        (out / "jax.json").write_text(json.dumps(jax_devices()))
    else:
        from varbayes.inference import ranks

        res = torch_ranks()
        (out / f"rank{res['rank']}.json").write_text(json.dumps(res))
        ranks.leave_and_exit(0)  # past gloo's teardown, which now and then aborts a rank
