"""Train a small VAE with fit() and leave its checkpoint: run by the scaling tests in one
process, on JAX devices (``--devices``) or on torchrun ranks.

usage: python worker.py BACKEND DEVICES EPOCHS N_TRAIN BATCH ELBO COMPILER CHECKPOINT
(ELBO: trace, meanfield, or the objective iwae or dreg with 3 samples)
"""

import functools
import sys

import numpy as np

from varbayes.inference import ranks
from varbayes.inference.backends import model_module
from varbayes.inference.vi.svi import SVIOptions, fit
from varbayes.models.vae.config import VAEConfig


def main() -> None:
    backend, devices, epochs, n, batch, elbo, compiler, ckpt = sys.argv[1:]
    ranks.init_from_env()
    rng = np.random.default_rng(0)
    x = (rng.random((int(n), 24)) < 0.3).astype(np.float32)
    test = (rng.random((30, 24)) < 0.3).astype(np.float32)
    mod = model_module("vae", backend)
    vae = mod.build(VAEConfig(x_dim=24, z_dim=3, hidden=(16,)), seed=0)
    weighted = elbo in ("iwae", "dreg")  # an objective of 3 importance samples
    options = SVIOptions(backend=backend, elbo="trace" if weighted else elbo,
                         objective=elbo if weighted else "elbo", particles=3 if weighted else 1,
                         epochs=int(epochs), batch_size=int(batch),
                         devices=int(devices), lr=1e-2, jit=compiler != "none",
                         compiler="torchscript" if compiler == "none" else compiler, seed=3)

    def binarize(b, r):  # a transform with its own draws, as a dynamic binarization has
        return ((r.random(b[0].shape) < b[0] + 0.2).astype(np.float32),)

    fit(functools.partial(mod.model, vae), functools.partial(mod.guide, vae), x,
        options=options, eval_sets={"test": test}, transform=binarize, checkpoint=ckpt)
    if ranks.launched():
        ranks.leave_and_exit(0)


if __name__ == "__main__":
    main()
