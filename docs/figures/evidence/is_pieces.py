"""Where the time of IS goes: the NumPyro route against its pieces written by hand, on one
batch of 100 binarized MNIST test images with K = 5000 (chunks of 100 draws: products of
10⁴ rows), the 784-200-200-50 VAE of ``benchmarks/evidence.py``.

``python docs/figures/evidence/is_pieces.py`` prints, per variant, the best of five
interleaved timings and the decoder's GFLOP/s at that time (the decoder's products are
2.07·10¹¹ FLOP per batch):

* ``products+tanh``: the decoder alone, with its ``tanh`` layers;
* ``+bernoulli``: and the Bernoulli log density of the images;
* ``hand IS``: and the Gaussian draws, the encoder and the log densities of z: the whole
  estimate written by hand;
* ``route``: :func:`varbayes.importance_sampling` on the NumPyro model and guide.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from varbayes import importance_sampling
from varbayes.inference.data import datasets
from varbayes.inference.evidence.batches import batches as make_batches
from varbayes.models.vae import numpyro_model as mod
from varbayes.models.vae.config import VAEConfig

K, CHUNK = 5000, 100
FLOP = 2 * K * 100 * (50 * 200 + 200 * 200 + 200 * 784)


def bernoulli(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x | logits) summed over pixels, (..., M)."""
    return -(jnp.clip(logits, 0) + jnp.log1p(jnp.exp(-jnp.abs(logits))) - logits * x).sum(-1)


def variants(x: jax.Array) -> dict:
    """name -> jitted function of (encoder, decoder) running the batch's K draws."""
    def looped(piece):  # the K draws in a lax.map over chunks, as the route runs them
        return jax.jit(lambda enc, dec: jax.lax.map(lambda c: piece(enc, dec, c),
                                                    jnp.arange(K // CHUNK)))

    def z_of(c):  # stand-in latents for the decoder-only variants
        return jnp.broadcast_to(c.astype(jnp.float32) * 1e-3, (CHUNK, 100, 50))

    def hand(enc, dec, c):
        loc, scale = enc(x)
        eps = jax.random.normal(jax.random.fold_in(jax.random.key(0), c), (CHUNK, 100, 50))
        z = loc + scale * eps
        return (bernoulli(dec(z)[0], x) - 0.5 * (z**2).sum(-1)
                + (0.5 * eps**2 + jnp.log(scale)).sum(-1))

    return {"products+tanh": looped(lambda enc, dec, c: dec(z_of(c))[0].sum(-1)),
            "+bernoulli": looped(lambda enc, dec, c: bernoulli(dec(z_of(c))[0], x)),
            "hand IS": looped(hand)}


def main() -> None:
    d = datasets.load("mnist", os.environ.get("VARBAYES_DATA"))
    x = datasets.dynamic_binarize(d.x_test[:100], np.random.default_rng(0)).astype(np.float32)
    vae = mod.build(VAEConfig(x_dim=784, z_dim=50, hidden=(200, 200)), seed=0)
    batch = make_batches((x,), 100, backend="numpyro", static=(vae,))

    def route() -> None:
        importance_sampling(mod.model, mod.guide, batch, K, chunk=CHUNK, diagnostics=False)

    fns = {n: (lambda f=f: f(vae.encoder, vae.decoder).block_until_ready())
           for n, f in variants(jnp.asarray(x)).items()} | {"route": route}
    for f in fns.values():  # compile
        f()
    best = {n: np.inf for n in fns}
    for _ in range(5):
        for n, f in fns.items():
            t = time.perf_counter()
            f()
            best[n] = min(best[n], time.perf_counter() - t)
    for n, t in best.items():
        print(f"{n:14s} {t:6.3f} s   {FLOP / t / 1e9:5.0f} GFLOP/s")


if __name__ == "__main__":
    main()
