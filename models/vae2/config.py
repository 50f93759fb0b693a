"""The two-stochastic-layer VAE's architecture, weight layout and initial weights.

Generative model p_θ(x, z₁, z₂) = p(z₂) p_θ(z₁|z₂) p_θ(x|z₁) and recognition model
q_φ(z₁, z₂|x) = q_φ(z₁|x) q_φ(z₂|z₁), with p(z₂) = N(0, I), Gaussian conditionals
N(μ, diag σ²) and a Bernoulli p(x|z₁), every conditional an MLP of tanh layers. The IWAE
paper's widths (its code's ``experiments.py``): z₁ 100 and z₂ 50 units; x ↔ z₁ through two
deterministic layers of 200 (both directions), z₁ ↔ z₂ through two of 100.

Each conditional is one of :mod:`varbayes.models.vae`'s networks, so the layout reuses its
configurations:

- ``q1`` (x → z₁) and ``px`` (z₁ → x): the encoder and decoder of ``outer``;
- ``q2`` (z₁ → z₂): the encoder of ``inner``;
- ``p1`` (z₂ → z₁): the encoder of ``prior`` (a Gaussian with unconstrained mean).

Flat weight names are ``<group>.<name in that configuration>``, e.g. ``q1.enc.0.weight``.
Nothing here imports torch or JAX.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import check
from varbayes.models.vae.config import ACTIVATIONS, VAEConfig, weight_shapes
from varbayes.models.vae.config import init_weights as vae_init_weights

GROUPS = ("q1", "q2", "p1", "px")


class VAE2Config(NamedTuple):
    """Architecture of a two-stochastic-layer VAE; plain values, so it round-trips JSON."""

    x_dim: int
    """Pixels per datapoint D."""
    z_dims: tuple[int, int] = (100, 50)
    """Sizes of z₁ (near the data) and z₂ (the top)."""
    hidden: tuple[tuple[int, ...], tuple[int, ...]] = ((200, 200), (100, 100))
    """Deterministic widths between x and z₁, and between z₁ and z₂."""
    activation: str = "tanh"

    @property
    def decoder(self) -> str:
        """p(x|z₁) is Bernoulli (binary images), as in the paper."""
        return "bernoulli"

    @property
    def condition(self) -> str:
        """No conditioning input (the batches' ``c`` is None)."""
        return "none"

    @classmethod
    def from_dict(cls, d: dict) -> VAE2Config:
        """The configuration of a checkpoint's JSON ``meta``."""
        return cls(int(d["x_dim"]), tuple(int(k) for k in d["z_dims"]),
                   tuple(tuple(int(w) for w in h) for h in d["hidden"]), str(d["activation"]))


def validate(config: VAE2Config) -> VAE2Config:
    """Raise :class:`VarbayesError` naming the bad field; return the config unchanged."""
    check(config.x_dim > 0, f"x_dim must be > 0, got {config.x_dim}")
    check(len(config.z_dims) == 2 and all(k > 0 for k in config.z_dims),
          f"z_dims must be two positive sizes, got {list(config.z_dims)}")
    check(len(config.hidden) == 2 and all(len(h) > 0 and all(w > 0 for w in h)
                                          for h in config.hidden),
          f"hidden must be two lists of positive widths, got {config.hidden}")
    check(config.activation in ACTIVATIONS,
          f"activation must be one of {ACTIVATIONS}, got {config.activation!r}")
    return config


def parts(config: VAE2Config) -> dict[str, tuple[VAEConfig, str]]:
    """Group → (the one-layer configuration it comes from, ``enc`` or ``dec``)."""
    (k1, k2), (h1, h2), act = config.z_dims, config.hidden, config.activation
    outer = VAEConfig(x_dim=config.x_dim, z_dim=k1, hidden=tuple(h1), activation=act)
    inner = VAEConfig(x_dim=k1, z_dim=k2, hidden=tuple(h2), activation=act)
    prior = VAEConfig(x_dim=k2, z_dim=k1, hidden=tuple(h2), activation=act)
    return {"q1": (outer, "enc"), "q2": (inner, "enc"), "p1": (prior, "enc"),
            "px": (outer, "dec")}


def group(weights: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """The entries of group ``name``, under their one-layer names (``enc.0.weight`` ...)."""
    return {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}


def init_weights(config: VAE2Config, seed: int) -> dict[str, np.ndarray]:
    """Initial weights (float32 numpy, fan-in uniform), identical for both backends."""
    validate(config)
    out: dict[str, np.ndarray] = {}
    for i, (name, (cfg, side)) in enumerate(parts(config).items()):
        sub = int(np.random.SeedSequence([seed, 7, i]).generate_state(1)[0])
        for k, v in vae_init_weights(cfg, sub).items():
            if k.startswith(side + "."):
                out[f"{name}.{k}"] = v
    return out


def networks(config: VAE2Config, weights: dict[str, np.ndarray] | None, seed: int,
             load_encoder: Any, load_decoder: Any) -> dict[str, Any]:
    """Group → its network, built by the backend's ``load_encoder`` / ``load_decoder`` from
    ``weights`` (or :func:`init_weights` with ``seed``): what both backends' ``build`` do."""
    validate(config)
    weights = init_weights(config, seed) if weights is None else weights
    return {name: (load_encoder if side == "enc" else load_decoder)(cfg, group(weights, name))
            for name, (cfg, side) in parts(config).items()}


def n_params(config: VAE2Config) -> int:
    """Number of scalar parameters (φ and θ together)."""
    return int(sum(np.prod(s) for name, (cfg, side) in parts(config).items()
                   for k, s in weight_shapes(cfg).items() if k.startswith(side + ".")))
