"""Figures of a trained VAE. Plotting lives here, never inside the training loop.

Every function takes numpy arrays, returns a matplotlib figure and leaves saving to
:func:`varbayes.inference.io.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, image_shape: Sequence[int], ncol: int) -> np.ndarray:
    """Tile (N, D) images into one (rows·H, ncol·W) array with a 1-pixel gap (value 0.3)."""
    H, W = image_shape
    n = len(images)
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (H + 1) - 1, ncol * (W + 1) - 1), 0.3, dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[r * (H + 1): r * (H + 1) + H, c * (W + 1): c * (W + 1) + W] = \
            np.asarray(img).reshape(H, W)
    return canvas


def image_grid(images: np.ndarray, image_shape: Sequence[int], ncol: int, title: str,
               row_labels: Sequence[str] | None = None, invert: bool = True) -> Any:
    """A grid of (N, D) images with values in [0, 1]; ``invert``: ink (1) drawn dark."""
    plt = _plt()
    canvas = tile(np.clip(images, 0, 1), image_shape, ncol)
    aspect = canvas.shape[0] / canvas.shape[1]
    fig, ax = plt.subplots(figsize=(min(10, 0.6 * ncol + 1), min(10, (0.6 * ncol + 1) * aspect)))
    ax.imshow(1 - canvas if invert else canvas, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        H = image_shape[0]
        ax.set_yticks([i * (H + 1) + H / 2 for i in range(len(row_labels))], row_labels)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def elbo_curves(history: Mapping[str, Sequence[float]], title: str) -> Any:
    """Per-datapoint ELBO (nats) per epoch: the training objective and each evaluated set."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    epochs = np.arange(1, len(history["objective"]) + 1)
    ax.plot(epochs, history["objective"], color="0.6", lw=1,
            label="training objective (running, per datapoint)")
    for key, values in history.items():
        if key.endswith("_elbo"):
            ax.plot(epochs, values, marker="." if len(epochs) < 30 else None,
                    label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per datapoint (nats)")
    ax.set_title(title, fontsize=9)
    finals = [v[-1] for k, v in history.items() if k.endswith("_elbo") and len(v)]
    if finals and len(epochs) > 3:  # zoom past the first epochs
        lo = min(min(v[len(v) // 4:]) for k, v in history.items() if k.endswith("_elbo"))
        hi = max(max(v) for k, v in history.items() if k.endswith("_elbo"))
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def reconstructions(x: np.ndarray, recon: np.ndarray, image_shape: Sequence[int],
                    title: str, invert: bool = True) -> Any:
    """Test images (top row of each pair) and their reconstructions E[x|z=μ(x)] (below)."""
    n = len(x)
    ncol = min(n, 16)
    rows = []
    for start in range(0, n, ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
    return image_grid(np.concatenate(rows), image_shape, ncol, title, invert=invert)


def manifold(decoded: np.ndarray, image_shape: Sequence[int], title: str,
             invert: bool = True) -> Any:
    """The decoded means over a square grid of 2-D latent values (n², D), row-major."""
    n = math.isqrt(len(decoded))
    return image_grid(decoded, image_shape, n, title, invert=invert)


def latent_scatter(mu: np.ndarray, labels: np.ndarray | None, title: str) -> Any:
    """Test-set posterior means μ(x) for a 2-D latent, coloured by class label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=3, alpha=0.6)
    else:
        sc = ax.scatter(mu[:, 0], mu[:, 1], s=3, c=labels, cmap="tab10", alpha=0.7)
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title(title, fontsize=9)
    return fig


def inpainting(original: np.ndarray, masked: np.ndarray, filled: np.ndarray,
               samples: np.ndarray, image_shape: Sequence[int], title: str,
               invert: bool = True) -> Any:
    """Rows: originals, inputs with the hidden region grey, the mean fill, sampled fills."""
    ncol = len(original)
    stack = np.concatenate([original, masked, filled, *samples])
    labels = ["original", "observed", "mean fill"] + [f"sample {i + 1}"
                                                      for i in range(len(samples))]
    return image_grid(stack, image_shape, ncol, title, row_labels=labels, invert=invert)
