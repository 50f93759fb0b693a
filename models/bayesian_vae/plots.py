"""Figures of a trained Bayesian VAE (matplotlib figures; saving is the caller's job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from varbayes.models.bayesian_vae.predictive import Uncertainty
from varbayes.models.vae.plots import _plt, tile


def uncertainty_maps(x: np.ndarray, u: Uncertainty, image_shape: Sequence[int],
                     title: str) -> Any:
    """Rows: test images, predictive mean p̄, epistemic Var_θ p, aleatoric E_θ p(1−p)."""
    plt = _plt()
    n = len(x)
    rows = [("image", x, "gray_r", 1.0), ("predictive mean", u.mean, "gray_r", 1.0),
            ("epistemic (θ)", u.epistemic, "magma", float(u.epistemic.max()) or 1.0),
            ("aleatoric", u.aleatoric, "magma", 0.25)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, 0.7 * n), 1.0 * len(rows) + 0.6))
    for ax, (label, imgs, cmap, vmax) in zip(axes, rows, strict=True):
        im = ax.imshow(tile(imgs, image_shape, n), cmap=cmap, vmin=0.0, vmax=vmax)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if cmap == "magma":
            fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=9)
    return fig


def sigma_histogram(sigma: dict[str, np.ndarray], init_sigma: float, prior_scale: float,
                    title: str) -> Any:
    """Histogram of log10 σ of q(θ) per layer, with the initial σ and the prior s marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    layers = sorted({k.rsplit(".", 1)[0] for k in sigma})
    lo = np.log10(min(float(v.min()) for v in sigma.values()))
    hi = np.log10(max(float(v.max()) for v in sigma.values()) * 1.01)
    bins = np.linspace(min(lo, np.log10(init_sigma)) - 0.1, max(hi, np.log10(prior_scale)) + 0.1,
                       60)
    for layer in layers:
        v = np.concatenate([sigma[k].ravel() for k in sigma if k.rsplit(".", 1)[0] == layer])
        ax.hist(np.log10(v), bins=bins, histtype="step", label=f"{layer} ({v.size})")
    ax.axvline(np.log10(init_sigma), color="k", ls=":", label="initial σ")
    ax.axvline(np.log10(prior_scale), color="k", ls="--", label="prior s")
    ax.set_xlabel("log10 σ of q(θ)")
    ax.set_ylabel("weights")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
