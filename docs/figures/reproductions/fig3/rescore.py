"""Score the final models of a ``varbayes reproduce aevb-fig3`` run again with the
appendix-D estimator: ``python docs/figures/reproductions/fig3/rescore.py RUN_DIR``.

Writes ``rescored.json`` beside this file: per training-set size and method, the mean and
standard error of log p(x) (nats) over the first 500 training and test points, and AEVB's
lead over the other two, paired over the same test points. The first one-hour run of
2026-12-03 was scored during training by an estimator that split its draws by chain (fixed
since), so only its final models could be scored again; see docs/reproductions.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from varbayes.inference.vae.reproduce_fig3 import log_evidence, mean_se
from varbayes.inference.vae.run import exported, load_run
from varbayes.inference.vi.checkpoint import load_checkpoint
from varbayes.models.vae import numpyro_model


def main(run_dir: Path, sizes: tuple[int, ...] = (1000, 50000)) -> dict:
    out: dict = {}
    for n in sizes:
        base = run_dir / "runs" / f"mnist-n{n}-z3"
        aevb = load_run(f"{base}-AEVB")
        xs = (aevb.data.x_train_eval[:500], aevb.data.x_test[:500])
        weights, _ = exported(load_checkpoint(Path(f"{base}-MCEM") / "checkpoint.npz")[0])
        vaes = {"AEVB": aevb.vae, "wake-sleep": load_run(f"{base}-wake-sleep").vae,
                "MCEM": numpyro_model.build(aevb.vae.config, weights)}
        test = {}
        for m, vae in vaes.items():
            train, test[m] = log_evidence(vae, xs[0], 0), log_evidence(vae, xs[1], 1)
            out[f"n{n}_{m}"] = {"train": mean_se(train), "test": mean_se(test[m])}
        for m in ("wake-sleep", "MCEM"):
            out[f"n{n}_AEVB_minus_{m}"] = mean_se(test["AEVB"] - test[m])
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    (Path(__file__).parent / "rescored.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
