"""What both VAE backends share: the configuration, the weight layout and initial weights,
input checks and the conditioning vectors of the conditional VAE.

Kingma & Welling (2013), *Auto-Encoding Variational Bayes*, section 3 and appendix C:
the recognition model q_φ(z|x) = N(μ(x), diag σ²(x)) and the generative model
p_θ(x|z) p(z) with p(z) = N(0, I) are MLPs. Nothing here imports torch or JAX.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import VarbayesError, check

ACTIVATIONS = ("tanh", "relu")
DECODERS = ("bernoulli", "gaussian")
CONDITIONS = ("none", "label", "observed")
MASKS = ("lower", "upper", "left", "right")


class VAEConfig(NamedTuple):
    """Architecture of a (conditional) VAE; plain values only, so it round-trips JSON."""

    x_dim: int
    """Pixels per datapoint D."""
    z_dim: int
    """Latent size K."""
    hidden: tuple[int, ...] = (200,)
    """Hidden layer widths, the same for the encoder and (mirrored) the decoder."""
    activation: str = "tanh"
    """``tanh`` as in the paper, or ``relu``."""
    decoder: str = "bernoulli"
    """``bernoulli`` (logits output) or ``gaussian`` (sigmoid mean, learned variance)."""
    min_scale: float = 0.01
    """Gaussian decoder: σ = min_scale + softplus(raw), so the variance stays > min_scale²."""
    condition: str = "none"
    """``none``, ``label`` (one-hot class) or ``observed`` (the visible part of the image)."""
    n_classes: int = 0
    """Classes for ``condition="label"``."""
    image_shape: tuple[int, ...] = ()
    """(H, W) when ``condition="observed"`` (to build the mask) and for figures."""
    mask: str = "lower"
    """Hidden region for ``condition="observed"``: lower, upper, left or right half."""
    prior_precision: float = 0.0
    """λ of the N(0, λ⁻¹ I) prior on the decoder weights θ (0: none, 1: the paper's N(0, I))."""
    init_std: float = 0.0
    """Initial weights ~ N(0, init_std²) (the paper: 0.01); 0 keeps the fan-in uniform."""

    @property
    def cond_dim(self) -> int:
        """Length of the conditioning vector c (0 for a plain VAE)."""
        if self.condition == "label":
            return self.n_classes
        if self.condition == "observed":
            return int((~hidden_mask(self)).sum())
        return 0

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stored in every checkpoint."""
        return json.dumps(self._asdict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        """Inverse of :meth:`to_json` after ``json.loads``; unknown keys are an error."""
        unknown = set(d) - set(cls._fields)
        check(not unknown, f"unknown VAE config keys {sorted(unknown)}: checkpoint from "
                           "another version of varbayes")
        d = dict(d)
        for key in ("hidden", "image_shape"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return validate(cls(**d))


def validate(config: VAEConfig) -> VAEConfig:
    """Raise :class:`VarbayesError` naming the bad field; return the config unchanged."""
    check(config.x_dim > 0, f"x_dim must be > 0, got {config.x_dim}")
    check(config.z_dim > 0, f"--latent must be > 0, got {config.z_dim}: pass a positive "
                            "latent size such as 2, 10 or 20")
    check(len(config.hidden) > 0 and all(h > 0 for h in config.hidden),
          f"--hidden must be positive widths like 400 or 200,200, got {list(config.hidden)}")
    check(config.activation in ACTIVATIONS,
          f"--activation must be one of {ACTIVATIONS}, got {config.activation!r}")
    check(config.decoder in DECODERS,
          f"--decoder must be one of {DECODERS}, got {config.decoder!r}")
    check(config.min_scale > 0, f"min_scale must be > 0, got {config.min_scale}")
    check(config.condition in CONDITIONS,
          f"--conditional must be one of {CONDITIONS}, got {config.condition!r}")
    check(config.prior_precision >= 0,
          f"--weight-decay must be >= 0, got {config.prior_precision}")
    check(config.init_std >= 0, f"--init-std must be >= 0, got {config.init_std}")
    if config.condition == "label":
        check(config.n_classes > 1, "a label-conditional VAE needs a labelled dataset "
                                    f"(n_classes > 1), got n_classes={config.n_classes}")
    if config.condition == "observed":
        check(config.mask in MASKS, f"--mask must be one of {MASKS}, got {config.mask!r}")
        check(len(config.image_shape) == 2
              and config.image_shape[0] * config.image_shape[1] == config.x_dim,
              f"condition='observed' needs image_shape (H, W) with H*W = {config.x_dim}, "
              f"got {config.image_shape}")
    return config


# ----------------------------------------------------------------------------- weights

def layer_sizes(config: VAEConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear layer, keyed by the layer's name, encoder first.

    Encoder: ``enc.0 .. enc.{n-1}`` (trunk), ``enc.loc`` (μ) and ``enc.logvar`` (log σ²).
    Decoder: ``dec.0 .. dec.{n-1}`` (trunk, hidden sizes reversed) and ``dec.out``
    (Bernoulli logits or Gaussian mean), plus ``dec.scale`` for the Gaussian decoder.
    """
    sizes: dict[str, tuple[int, int]] = {}
    width = config.x_dim + config.cond_dim
    for i, h in enumerate(config.hidden):
        sizes[f"enc.{i}"] = (width, h)
        width = h
    sizes["enc.loc"] = (width, config.z_dim)
    sizes["enc.logvar"] = (width, config.z_dim)
    width = config.z_dim + config.cond_dim
    for i, h in enumerate(reversed(config.hidden)):
        sizes[f"dec.{i}"] = (width, h)
        width = h
    sizes["dec.out"] = (width, config.x_dim)
    if config.decoder == "gaussian":
        sizes["dec.scale"] = (width, config.x_dim)
    return sizes


def weight_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Flat weight names → shapes: ``<layer>.weight`` (out, in) and ``<layer>.bias`` (out,)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (n_in, n_out) in layer_sizes(config).items():
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


def init_weights(config: VAEConfig, seed: int) -> dict[str, np.ndarray]:
    """Initial weights as float32 numpy arrays, identical for both backends.

    Fan-in uniform U(−1/√in, 1/√in) (the torch default) unless ``config.init_std > 0``,
    in which case every weight and bias is N(0, init_std²) as in the paper.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    weights: dict[str, np.ndarray] = {}
    for name, shape in weight_shapes(config).items():
        if config.init_std > 0:
            w = rng.normal(0.0, config.init_std, size=shape)
        else:
            bound = 1.0 / np.sqrt(layer_sizes(config)[name.rsplit(".", 1)[0]][0])
            w = rng.uniform(-bound, bound, size=shape)
        weights[name] = w.astype(np.float32)
    return weights


def check_weights(config: VAEConfig, weights: dict[str, np.ndarray]) -> None:
    """Raise :class:`VarbayesError` unless ``weights`` has exactly this config's layout."""
    shapes = weight_shapes(config)
    check(set(weights) == set(shapes),
          f"weights do not match the VAE config: missing {sorted(set(shapes) - set(weights))}, "
          f"unexpected {sorted(set(weights) - set(shapes))}")
    for name, shape in shapes.items():
        check(tuple(weights[name].shape) == shape,
              f"weight {name} has shape {tuple(weights[name].shape)}, the config needs {shape}")


def n_params(config: VAEConfig) -> int:
    """Number of scalar parameters (encoder φ and decoder θ together)."""
    return int(sum(np.prod(s) for s in weight_shapes(config).values()))


# ------------------------------------------------------------------------- data checks

def check_data(x: np.ndarray, config: VAEConfig, what: str = "data") -> np.ndarray:
    """Return ``x`` as float32 (N, D) after checking shape, NaNs and the decoder's support.

    A Bernoulli decoder needs values in [0, 1]; a Gaussian one only finite values.
    """
    x = np.asarray(x)
    check(x.ndim == 2 and x.shape[1] == config.x_dim,
          f"{what} must have shape (N, {config.x_dim}), got {x.shape}: flatten images to "
          f"vectors of {config.x_dim} pixels")
    check(x.shape[0] > 0, f"{what} is empty")
    check(np.issubdtype(x.dtype, np.number), f"{what} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    n_nan = int(np.isnan(x).sum())
    check(n_nan == 0, f"{what} contains {n_nan} NaN values: remove or impute them first")
    check(bool(np.isfinite(x).all()), f"{what} contains infinite values")
    if config.decoder == "bernoulli":
        lo, hi = float(x.min()), float(x.max())
        check(lo >= 0.0 and hi <= 1.0,
              f"{what} has values in [{lo:.4g}, {hi:.4g}] but a Bernoulli decoder needs "
              "[0, 1]: rescale the data or pass --decoder gaussian")
    return x


# ------------------------------------------------------------------------ conditioning

def hidden_mask(config: VAEConfig) -> np.ndarray:
    """Boolean (D,) mask of the pixels hidden from a ``condition="observed"`` CVAE."""
    H, W = config.image_shape
    m = np.zeros((H, W), dtype=bool)
    if config.mask == "lower":
        m[H // 2:, :] = True
    elif config.mask == "upper":
        m[: H // 2, :] = True
    elif config.mask == "left":
        m[:, : W // 2] = True
    else:
        m[:, W // 2:] = True
    return m.reshape(-1)


def condition_vector(config: VAEConfig, x: np.ndarray,
                     y: np.ndarray | None = None) -> np.ndarray | None:
    """The conditioning input c, float32 (N, cond_dim), or None for a plain VAE.

    ``label``: one-hot of ``y``. ``observed``: the visible pixels of ``x`` (N, D).
    """
    if config.condition == "none":
        return None
    if config.condition == "label":
        if y is None:
            raise VarbayesError("a label-conditional VAE needs labels: this dataset has none")
        y = np.asarray(y).astype(np.int64)
        check(y.min() >= 0 and y.max() < config.n_classes,
              f"labels must be in [0, {config.n_classes}), got [{y.min()}, {y.max()}]")
        return np.eye(config.n_classes, dtype=np.float32)[y]
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:, ~hidden_mask(config)])
