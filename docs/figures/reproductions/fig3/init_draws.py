"""The appendix-D score of a ``varbayes reproduce aevb-fig3`` run's final AEVB and MCEM models
(1,000 training images) against the number of encoder draws each HMC chain starts from:
``python docs/figures/reproductions/fig3/init_draws.py RUN_DIR``.

Writes ``init_draws.json`` beside this file: per init_draws, the mean and standard error of
log p(x) (nats) over the first 500 test images and the seconds taken (compilation
included). MCEM has no encoder: its chains start from draws of the untrained one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from varbayes.inference.evidence.hmc import hmc_evidence
from varbayes.inference.vae.reproduce_fig3 import EVAL_HMC, mean_se
from varbayes.inference.vae.run import exported, load_run, run_batches
from varbayes.inference.vi.checkpoint import load_checkpoint
from varbayes.models.vae import numpyro_model


def main(run_dir: Path, draws: tuple[int, ...] = (1, 500, 1000, 2000)) -> dict:
    base = run_dir / "runs" / "mnist-n1000-z3"
    aevb = load_run(f"{base}-AEVB")
    x = aevb.data.x_test[:500]
    weights, _ = exported(load_checkpoint(Path(f"{base}-MCEM") / "checkpoint.npz")[0])
    vaes = {"AEVB": aevb.vae, "MCEM": numpyro_model.build(aevb.vae.config, weights)}
    out: dict = {}
    for n in draws:
        for m, vae in vaes.items():
            t0 = time.perf_counter()
            r = hmc_evidence(numpyro_model.model, numpyro_model.guide,
                             run_batches(vae, "numpyro", x, None, 500),
                             EVAL_HMC._replace(init_draws=n), seed=1)
            out[f"{m}_init{n}"] = {"test": mean_se(r.log_px),
                                   "seconds": time.perf_counter() - t0}
            print(m, n, out[f"{m}_init{n}"], flush=True)
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    (Path(__file__).parent / "init_draws.json").write_text(json.dumps(result, indent=1) + "\n")
