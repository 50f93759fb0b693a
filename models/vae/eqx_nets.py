"""The VAE's networks as equinox modules (used by :mod:`.numpyro_model`).

The layers act on whole batches (``x @ W.T + b``), exactly as ``torch.nn.Linear`` does, so
no ``vmap`` is needed and the same flat weight dict loads into either backend.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from varbayes.models.vae.config import VAEConfig, check_weights, layer_sizes


class Linear(eqx.Module):
    """y = x Wᵀ + b for x (..., in); W (out, in), b (out,)."""

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight.T + self.bias


def _act(name: str, h: jax.Array) -> jax.Array:
    return jnp.tanh(h) if name == "tanh" else jax.nn.relu(h)


class Encoder(eqx.Module):
    """q_φ(z|x[, c]): x (M, D) [c (M, C)] → μ (M, K), σ (M, K) with σ = exp(½ log σ²)."""

    layers: dict[str, Linear]
    n_hidden: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __call__(self, x: jax.Array, c: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        h = x if c is None else jnp.concatenate([x, c], axis=-1)
        for i in range(self.n_hidden):
            h = _act(self.activation, self.layers[str(i)](h))
        return self.layers["loc"](h), jnp.exp(0.5 * self.layers["logvar"](h))


class Decoder(eqx.Module):
    """p_θ(x|z[, c]): z (..., M, K) → Bernoulli logits, or Gaussian (mean, σ), each (..., M, D)."""

    layers: dict[str, Linear]
    n_hidden: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    gaussian: bool = eqx.field(static=True)
    min_scale: float = eqx.field(static=True)

    def __call__(self, z: jax.Array, c: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        if c is not None:
            c = jnp.broadcast_to(c, (*z.shape[:-1], c.shape[-1]))
            z = jnp.concatenate([z, c], axis=-1)
        h = z
        for i in range(self.n_hidden):
            h = _act(self.activation, self.layers[str(i)](h))
        out = self.layers["out"](h)
        if not self.gaussian:
            return out, None
        return jax.nn.sigmoid(out), self.min_scale + jax.nn.softplus(self.layers["scale"](h))


def _layers(config: VAEConfig, prefix: str, weights: dict[str, np.ndarray]) -> dict[str, Linear]:
    return {name.split(".", 1)[1]: Linear(jnp.asarray(weights[f"{name}.weight"], jnp.float32),
                                          jnp.asarray(weights[f"{name}.bias"], jnp.float32))
            for name in layer_sizes(config) if name.startswith(prefix + ".")}


def load_encoder(config: VAEConfig, weights: dict[str, np.ndarray]) -> Encoder:
    """The encoder of ``config`` holding the ``enc.*`` entries of ``weights``."""
    return Encoder(_layers(config, "enc", weights), len(config.hidden), config.activation)


def load_decoder(config: VAEConfig, weights: dict[str, np.ndarray]) -> Decoder:
    """The decoder of ``config`` holding the ``dec.*`` entries of ``weights``."""
    return Decoder(_layers(config, "dec", weights), len(config.hidden), config.activation,
                   config.decoder == "gaussian", float(config.min_scale))


def build_networks(config: VAEConfig, weights: dict[str, np.ndarray]) -> tuple[Encoder, Decoder]:
    """Encoder and decoder holding ``weights`` (flat names, numpy arrays)."""
    check_weights(config, weights)
    return load_encoder(config, weights), load_decoder(config, weights)


def network_weights(encoder: Encoder, decoder: Decoder) -> dict[str, np.ndarray]:
    """The flat weight dict (float32 numpy copies) of an encoder/decoder pair."""
    out: dict[str, np.ndarray] = {}
    for prefix, module in (("enc", encoder), ("dec", decoder)):
        for key, layer in module.layers.items():
            out[f"{prefix}.{key}.weight"] = np.array(layer.weight, dtype=np.float32)
            out[f"{prefix}.{key}.bias"] = np.array(layer.bias, dtype=np.float32)
    return out
