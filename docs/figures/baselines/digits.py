"""AEVB against its baselines on digits at equal epochs: the ELBO (AEVB), wake-sleep, RWS
and Monte Carlo EM, each scored by AIS from the prior on the same test images.

Run from the repository root: ``python docs/figures/baselines/digits.py [EPOCHS]``. Writes
``digits.png`` and ``digits.json`` beside this file (a few minutes on 2 cores).

All four learn the same decoder, 64-200-10 with tanh, on the embedded digits with dynamic
binarization, Adam at 3e-3 and minibatches of 100, NumPyro, seed 0. AEVB, wake-sleep and RWS
train through ``varbayes vae train``; MCEM runs :func:`varbayes.inference.mcmc.mcem.mcem`
on the same model (its encoder unused). log p(x) on the test set is estimated by AIS from
the prior (200 steps, 16 chains), which needs no encoder, so the four decoders are scored
alike.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np

from varbayes.inference.cli import main
from varbayes.inference.evidence.ais import ais
from varbayes.inference.evidence.annealing import AISOptions
from varbayes.inference.evidence.batches import batches
from varbayes.inference.mcmc.mcem import MCEMOptions, mcem
from varbayes.inference.vae.run import load_run
from varbayes.inference.vae.train import train_transform

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
COMMON = ["--dataset", "digits", "--latent", "10", "--hidden", "200", "--lr", "3e-3",
          "--batch-size", "100", "--epochs", str(EPOCHS), "--seed", "0", "--quiet"]
ROWS = {"AEVB (ELBO, estimator B)": ["--objective", "elbo"],
        "wake-sleep": ["--objective", "wake-sleep"],
        "RWS, K=5": ["--objective", "rws", "--particles", "5"]}
AIS = AISOptions(n_steps=200, chains=16, init="prior")


def score(model, guide, x, params=None):
    """Mean AIS log p(x) over the test images and its standard error, nats."""
    r = ais(model, guide, batches([x], 500), AIS, backend="numpyro", seed=0, params=params)
    lp = np.asarray(r.log_px, np.float64)
    return float(lp.mean()), float(lp.std(ddof=1) / np.sqrt(len(lp)))


def main_() -> None:
    out, curves = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in ROWS.items():
            run_dir = Path(tmp) / name.split()[0].strip(",")
            t0 = time.perf_counter()
            assert main(["vae", "train", *COMMON, *args, "--out", str(run_dir)]) == 0
            seconds = time.perf_counter() - t0
            run = load_run(run_dir)
            header = json.loads(np.load(run_dir / "checkpoint.npz")["header"].tobytes())
            curves[name] = header["history"]["test_elbo"]
            model = functools.partial(run.mod.model, run.vae)
            guide = functools.partial(run.mod.guide, run.vae)
            lp, se = score(model, guide, run.data.x_test)
            out[name] = {"test_ais": lp, "test_ais_stderr": se,
                         "test_elbo": curves[name][-1], "train_seconds": seconds}
            print(name, out[name], flush=True)
        # MCEM on the same model and data: the last run's VAE before training
        mod, data = run.mod, run.data
        vae = mod.build(run.vae.config, seed=0)
        model = functools.partial(mod.model, vae)
        guide = functools.partial(mod.guide, vae)
        options = MCEMOptions(epochs=EPOCHS, batch_size=100, optimizer="adam", lr=3e-3,
                              m_steps=1, hmc_steps=1, n_leapfrog=10, seed=0)
        t0 = time.perf_counter()
        r = mcem(model, (data.x_train, None), options=options,
                 transform=train_transform(vae.config, dynamic=True))
        seconds = time.perf_counter() - t0
        lp, se = score(model, guide, data.x_test, params=r.params)
        curves["MCEM (HMC E-step)"] = r.history["objective"]
        out["MCEM (HMC E-step)"] = {"test_ais": lp, "test_ais_stderr": se,
                                    "final_log_joint": r.history["objective"][-1],
                                    "accept": r.history["accept"][-1],
                                    "train_seconds": seconds}
        print("MCEM", out["MCEM (HMC E-step)"], flush=True)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        if not name.startswith("MCEM"):
            a.plot(np.arange(1, len(c) + 1), c, label=name)
    a.set(xlabel="epoch", ylabel="test ELBO (nats)", title="the guide's bound while training")
    a.legend(fontsize=8)
    names = list(out)
    vals = [out[n]["test_ais"] for n in names]
    errs = [2 * out[n]["test_ais_stderr"] for n in names]
    b.barh(names, vals, xerr=errs, color="tab:blue")
    b.set(xlim=(min(vals) - 3, max(vals) + 2), xlabel="test log p(x), AIS from the prior (nats)",
          title=f"after {EPOCHS} epochs")
    fig.tight_layout()
    fig.savefig(HERE / "digits.png", dpi=110)
    (HERE / "digits.json").write_text(json.dumps({"epochs": EPOCHS, "ais": AIS._asdict(),
                                                  "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main_()
