"""Figures for Ising denoising; each function returns a matplotlib Figure (save it yourself)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel(clean: np.ndarray | None, observed: np.ndarray, mean: np.ndarray,
          estimate: np.ndarray, title: str = ""):
    """clean | noisy | posterior mean | MPM estimate | per-pixel std ``√(1 − E[z]²)``.

    With a clean image, the noisy and the estimate panels give their pixel error: the
    share of pixels whose sign differs from the clean image's.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.9))
    std = np.sqrt(np.clip(1.0 - np.asarray(mean) ** 2, 0.0, 1.0))
    lim = float(np.max(np.abs(observed))) or 1.0

    def error(img: np.ndarray) -> str:
        if clean is None:
            return ""
        return f"\npixel error {100 * np.mean(np.sign(img) != np.sign(clean)):.2f}%"

    shown = [(clean, "clean", (-1, 1), "gray"),
             (observed, "noisy" + error(observed), (-lim, lim), "gray"),
             (mean, "posterior mean E[z]", (-1, 1), "gray"),
             (estimate, "MPM estimate" + error(estimate), (-1, 1), "gray"),
             (std, "uncertainty: std of z", (0, 1), "magma")]
    for ax, (img, name, (lo, hi), cmap) in zip(axes, shown, strict=True):
        if img is None:
            ax.text(0.5, 0.5, "no clean image", ha="center", va="center")
        else:
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if name.startswith("uncertainty"):
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="std of z (spin units)")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def history(values: np.ndarray, label: str, title: str = ""):
    """The objective (ELBO, log p̃...) per iteration, and its distance to the last value."""
    plt = _plt()
    values = np.asarray(values, dtype=np.float64)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    its = np.arange(len(values))
    marker = "." if len(values) < 60 else None
    ax.plot(its, values, marker=marker)
    ax.set_ylabel(label)
    distance = np.abs(values[-1] - values[:-1])
    keep = distance > 0
    ax2.semilogy(its[:-1][keep], distance[keep], marker=marker)
    ax2.set_ylabel("|last value − value|")
    for a in (ax, ax2):
        a.set_xlabel("iteration")
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def comparison(clean: np.ndarray | None, observed: np.ndarray,
               estimates: Mapping[str, np.ndarray], errors: Mapping[str, float]):
    """One row: clean, noisy, then each method's estimate titled with its pixel error."""
    plt = _plt()
    n = 2 + len(estimates)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6))
    lim = float(np.max(np.abs(observed))) or 1.0
    items: list[tuple[str, np.ndarray | None, float]] = [("clean", clean, 1.0),
                                                          ("noisy", observed, lim)]
    items += [(k, v, 1.0) for k, v in estimates.items()]
    for ax, (name, img, scale) in zip(axes, items, strict=True):
        if img is not None:
            ax.imshow(img, cmap="gray", vmin=-scale, vmax=scale, interpolation="nearest")
        err = errors.get(name)
        ax.set_title(name if err is None or np.isnan(err) else f"{name}\n{100 * err:.2f}%",
                     fontsize=8)
        ax.set_axis_off()
    return fig


def gap_curve(couplings: Sequence[float], curves: Mapping[str, np.ndarray],
              ylabel: str, marks: Mapping[str, float]):
    """Gap (or relative error) against J, one line per setting, with vertical marks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in curves.items():
        ax.plot(couplings, ys, marker=".", label=name)
    for name, x in marks.items():
        ax.axvline(x, ls="--", lw=0.8, color="gray")
        ax.text(x, ax.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=7)
    ax.set_xlabel("coupling J")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
