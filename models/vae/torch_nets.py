"""The VAE's networks as torch ``nn.Module``s (used by :mod:`.pyro_model`).

Layer names follow :func:`.config.layer_sizes`, so the state dict of
``nn.ModuleDict`` keys ``enc.0`` ... maps one-to-one onto the flat weight dict
(``enc.0.weight`` ...) that the equinox networks use too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from varbayes.models.vae.config import VAEConfig, check_weights, layer_sizes


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.tanh if name == "tanh" else torch.relu


def _linears(config: VAEConfig, prefix: str) -> nn.ModuleDict:
    return nn.ModuleDict({name.split(".", 1)[1]: nn.Linear(n_in, n_out)
                          for name, (n_in, n_out) in layer_sizes(config).items()
                          if name.startswith(prefix + ".")})


class Encoder(nn.Module):
    """q_φ(z|x[, c]): x (M, D) [c (M, C)] → μ (M, K), σ (M, K) with σ = exp(½ log σ²)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.n_hidden = len(config.hidden)
        self.act = _activation(config.activation)
        self.layers = _linears(config, "enc")

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h = x if c is None else torch.cat([x, c], dim=-1)
        for i in range(self.n_hidden):
            h = self.act(self.layers[str(i)](h))
        loc = self.layers["loc"](h)
        scale = torch.exp(0.5 * self.layers["logvar"](h))
        return loc, scale


class Decoder(nn.Module):
    """p_θ(x|z[, c]): z (..., M, K) → Bernoulli logits, or Gaussian (mean, σ), each (..., M, D)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.n_hidden = len(config.hidden)
        self.act = _activation(config.activation)
        self.gaussian = config.decoder == "gaussian"
        self.min_scale = config.min_scale
        self.layers = _linears(config, "dec")

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = z if c is None else torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], dim=-1)
        for i in range(self.n_hidden):
            h = self.act(self.layers[str(i)](h))
        out = self.layers["out"](h)
        if not self.gaussian:
            return out, None
        return torch.sigmoid(out), self.min_scale + nn.functional.softplus(self.layers["scale"](h))


def _load(module: nn.Module, prefix: str, weights: dict[str, np.ndarray]) -> None:
    state = {f"layers.{k[len(prefix) + 1:]}": torch.as_tensor(np.array(v, dtype=np.float32))
             for k, v in weights.items() if k.startswith(prefix + ".")}
    module.load_state_dict(state, strict=True)


def load_encoder(config: VAEConfig, weights: dict[str, np.ndarray]) -> Encoder:
    """The encoder of ``config`` holding a copy of the ``enc.*`` entries of ``weights``."""
    enc = Encoder(config)
    _load(enc, "enc", weights)
    return enc


def load_decoder(config: VAEConfig, weights: dict[str, np.ndarray]) -> Decoder:
    """The decoder of ``config`` holding a copy of the ``dec.*`` entries of ``weights``."""
    dec = Decoder(config)
    _load(dec, "dec", weights)
    return dec


def build_networks(config: VAEConfig, weights: dict[str, np.ndarray]) -> tuple[Encoder, Decoder]:
    """Encoder and decoder holding a copy of ``weights`` (flat names, numpy arrays)."""
    check_weights(config, weights)
    return load_encoder(config, weights), load_decoder(config, weights)


def network_weights(encoder: Encoder, decoder: Decoder) -> dict[str, np.ndarray]:
    """The flat weight dict (float32 numpy copies) of an encoder/decoder pair."""
    out: dict[str, np.ndarray] = {}
    for prefix, module in (("enc", encoder), ("dec", decoder)):
        for k, v in module.state_dict().items():
            out[f"{prefix}.{k.removeprefix('layers.')}"] = v.detach().cpu().numpy().copy()
    return out
