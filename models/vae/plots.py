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
    """Per-datapoint ELBO (nats) per epoch: the training objective and each evaluated set,
    and the IS estimates of log p(x) (``<set>_is`` at ``is_epoch``) as crosses.

    The left panel shows every epoch; when the first epochs dwarf the rest, a right panel
    zooms on the later ones and says from which epoch it starts (nothing is clipped
    silently). Epoch ticks are whole numbers.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history["objective"]) + 1)
    evals = {k: np.asarray(v, float) for k, v in history.items() if k.endswith("_elbo")}
    is_epochs = np.asarray(history.get("is_epoch", []), int)
    estimates = {k: np.asarray(v, float) for k, v in history.items() if k.endswith("_is")}
    first = len(epochs) // 4
    zoom = False
    if evals and len(epochs) > 8:
        late = np.concatenate([v[first:] for v in evals.values()])
        full = np.concatenate(list(evals.values()))
        zoom = np.ptp(full) > 4 * max(np.ptp(late), 1e-9)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(9.5 if zoom else 5.5, 3.5),
                             squeeze=False)
    for j, ax in enumerate(axes[0]):
        lo = first if j == 1 else 0
        ax.plot(epochs[lo:], history["objective"][lo:], color="0.6", lw=1,
                label="training objective (running, per datapoint)")
        for key, values in evals.items():
            ax.plot(epochs[lo:], values[lo:], marker="." if len(epochs) < 30 else None,
                    label=key.replace("_", " "))
        for key, values in estimates.items():
            sel = is_epochs > lo
            ax.plot(is_epochs[sel], values[sel], "x", ms=5,
                    label=f"{key.removesuffix('_is')} log p(x), IS")
        if j == 1:
            late = np.concatenate([v[lo:] for v in evals.values()]
                                  + [v[is_epochs > lo] for v in estimates.values()])
            pad = 0.1 * (np.ptp(late) + 1e-9)
            ax.set_ylim(late.min() - pad, late.max() + pad)
            ax.set_title(f"from epoch {lo + 1} (zoomed)", fontsize=9)
        else:
            ax.set_title(title if not zoom else f"{title}: all epochs", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per datapoint")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def reconstructions(x: np.ndarray, recon: np.ndarray, image_shape: Sequence[int],
                    title: str, invert: bool = True) -> Any:
    """Test images (top row of each pair) and their reconstructions E[x|z=μ(x)] (below),
    each row labelled."""
    n = len(x)
    ncol = min(n, 16)
    rows, labels = [], []
    for start in range(0, n, ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
        labels += ["test x", "E[x | z=μ(x)]"]
    return image_grid(np.concatenate(rows), image_shape, ncol, title, row_labels=labels,
                      invert=invert)


def manifold(decoded: np.ndarray, image_shape: Sequence[int], title: str,
             invert: bool = True, grid: np.ndarray | None = None) -> Any:
    """The decoded means over a square grid of 2-D latent values (n², D), row-major:
    columns z₁ rising, rows z₂ falling. ``grid`` (n,): the z values along each axis, shown
    as tick labels so that the figure says which latents it covers."""
    n = math.isqrt(len(decoded))
    fig = image_grid(decoded, image_shape, n, title, invert=invert)
    if grid is not None:
        ax = fig.axes[0]
        H, W = image_shape
        every = max(1, n // 5)
        idx = list(range(0, n, every))
        ax.set_xticks([i * (W + 1) + W / 2 for i in idx], [f"{grid[i]:.2f}" for i in idx],
                      fontsize=7)
        ax.set_yticks([i * (H + 1) + H / 2 for i in idx],
                      [f"{grid[::-1][i]:.2f}" for i in idx], fontsize=7)
        ax.set_xlabel("z₁ (latent units; grid at Φ⁻¹ of evenly spaced quantiles)", fontsize=8)
        ax.set_ylabel("z₂", fontsize=8)
    return fig


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
