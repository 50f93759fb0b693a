"""Noise models: corrupt a clean ±1 image, and turn an observation into local evidence ℓ.

- ``gaussian``: ``x_i ~ N(z_i, σ²)``, so ``ℓ_i(z) = −(x_i − z)²/(2σ²) − ½ log(2πσ²)``.
- ``flip``: ``x_i = −z_i`` with probability ``p`` (else ``x_i = z_i``), so
  ``ℓ_i(z) = log(1 − p)`` if ``z = x_i`` and ``log p`` otherwise.

Both keep every constant of the likelihood, so ``Σ ℓ`` is a normalized ``log p(x | z)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from varbayes.models.errors import check
from varbayes.models.ising.energy import LocalField, Posterior, make_couplings

NOISE_KINDS = ("gaussian", "flip")


class Noise(NamedTuple):
    """A noise model: ``kind`` is ``"gaussian"`` (``scale`` = σ) or ``"flip"`` (``scale`` = p)."""

    kind: str
    scale: float


#: Smallest --sigma: the local fields 2y/σ² must stay finite in float32 (max 3.4e38), summed
#: over a million pixels. Noise this small makes thresholding the observation exact anyway.
MIN_SIGMA = 1e-15


def validate_noise(noise: Noise) -> Noise:
    """Return ``noise`` unchanged, or raise :class:`VarbayesError` saying what is wrong."""
    check(noise.kind in NOISE_KINDS,
          f"--noise must be one of {', '.join(NOISE_KINDS)}, got {noise.kind!r}")
    s = noise.scale
    if noise.kind == "gaussian":
        check(np.isfinite(s) and s > 0,
              f"--sigma must be > 0, got {s}: pass a positive noise standard deviation")
        check(s >= MIN_SIGMA,
              f"--sigma must be >= {MIN_SIGMA:g}, got {s:g}: below it the fields 1/σ² overflow "
              "float32; at such noise thresholding the observation (sign of y) is exact")
    else:
        check(np.isfinite(s) and 0 < s < 0.5,
              f"--flip-prob must be in (0, 0.5), got {s}: pass the chance that a pixel flips")
    return noise


def validate_clean(clean: np.ndarray) -> np.ndarray:
    """Check that a clean image is a 2-D array of ±1 values; return it as int8."""
    a = np.asarray(clean)
    check(a.ndim == 2 and min(a.shape) >= 1,
          f"the clean image must be a 2-D array, got shape {a.shape}")
    values = np.unique(a)
    check(bool(np.all(np.isin(values, (-1, 1)))),
          f"the clean image must be binary (±1), found values {values[:6].tolist()}"
          f"{' ...' if values.size > 6 else ''}: binarize it first")
    return a.astype(np.int8)


def validate_observed(observed: np.ndarray, noise: Noise) -> np.ndarray:
    """Check an observation: 2-D, finite, and ±1 under flip noise. Returns float64."""
    x = np.asarray(observed)
    check(x.ndim == 2 and min(x.shape) >= 1,
          f"the observation must be a 2-D array, got shape {x.shape}")
    check(np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x),
          f"the observation must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    check(bad == 0, f"the observation has {bad} NaN or infinite values: pass finite pixels")
    if noise.kind == "flip":
        check(bool(np.all(np.abs(x) == 1)),
              "flip noise needs a ±1 observation, found other values: "
              "use --noise gaussian for real-valued pixels")
    return x


def corrupt(clean: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    """Draw a noisy observation of a ±1 image: float64 (gaussian) or ±1 float64 (flip)."""
    z = validate_clean(clean).astype(np.float64)
    validate_noise(noise)
    if noise.kind == "gaussian":
        return z + noise.scale * rng.standard_normal(z.shape)
    flips = rng.random(z.shape) < noise.scale
    return np.where(flips, -z, z)


def local_field(observed: np.ndarray, noise: Noise) -> LocalField:
    """Local evidence ``ℓ_i(±1) = log p(x_i | z_i = ±1)`` in nats, each of shape (H, W)."""
    validate_noise(noise)
    x = validate_observed(observed, noise)
    if noise.kind == "gaussian":
        var = noise.scale**2
        const = -0.5 * np.log(2 * np.pi * var)
        return LocalField(minus=-((x + 1) ** 2) / (2 * var) + const,
                          plus=-((x - 1) ** 2) / (2 * var) + const)
    keep, flip = np.log1p(-noise.scale), np.log(noise.scale)
    return LocalField(minus=np.where(x < 0, keep, flip), plus=np.where(x > 0, keep, flip))


def threshold(observed: np.ndarray) -> np.ndarray:
    """The naive estimate ``sign(x)`` (ties to +1), as int8 ±1."""
    return np.where(np.asarray(observed) >= 0, 1, -1).astype(np.int8)


def pixel_error(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Fraction of pixels where a ±1 estimate differs from the clean image."""
    check(np.shape(estimate) == np.shape(clean),
          f"estimate shape {np.shape(estimate)} differs from clean shape {np.shape(clean)}")
    return float(np.mean(np.sign(estimate) != np.sign(clean)))


def make_posterior(observed: np.ndarray, noise: Noise, J) -> Posterior:
    """The posterior for an observation: local evidence from ``noise``, couplings from ``J``.

    ``J`` is a scalar or a ``(horizontal, vertical)`` pair (see :func:`make_couplings`).
    """
    field = local_field(observed, noise)
    return Posterior(make_couplings(J, field.plus.shape), field)


def data_logits(observed, noise: Noise):
    """Logits ``ℓ_i⁺ − ℓ_i⁻ = 2 h_i`` of ``q_i ∝ exp(ℓ_i)``: the data-driven initial guide.

    Works on numpy, JAX or torch arrays of shape (..., H, W): Gaussian ``2x/σ²``, flip
    ``x log((1 − p)/p)``.
    """
    if noise.kind == "gaussian":
        return observed * (2.0 / noise.scale**2)
    return observed * float(np.log1p(-noise.scale) - np.log(noise.scale))
