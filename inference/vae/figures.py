"""Figures of a VAE run: ELBO curves, reconstructions, prior samples, the 2-D manifold and
latent means, and for a Bayesian decoder the posterior-predictive samples, uncertainty maps
and the σ histogram. Each function writes PNGs into ``out`` and returns their names."""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from scipy.special import ndtri  # Φ⁻¹ (scipy.stats takes seconds to import)

from varbayes.inference.io import atomic_write_bytes, save_array, save_figure
from varbayes.inference.vae.run import Run, RunData, arrays_for
from varbayes.models.bayesian_vae import plots as bplots
from varbayes.models.bayesian_vae.config import BayesConfig
from varbayes.models.bayesian_vae.predictive import decoder_draws, predictive_samples, uncertainty
from varbayes.models.vae import plots
from varbayes.models.vae.config import condition_vector


def ink(vae: Any) -> bool:
    """Draw 1 as dark ink for binary-like data; grey images (Gaussian decoder) as they are."""
    return vae.config.decoder == "bernoulli"


def train_figures(out: Path, mod: ModuleType, vae: Any, data: RunData,
                  history: dict[str, list[float]], title: str, seed: int) -> list[str]:
    """ELBO curves, reconstructions, prior samples and, for K = 2, the manifold and the
    test-set latent means; returns the PNG names written in ``out``."""
    save_figure(plots.elbo_curves(history, title), out / "elbo_curves.png")
    names = ["elbo_curves.png"]
    names += reconstruction_figure(out, mod, vae, data, 16, title)
    names += sample_figure(out, mod, vae, data, 64, seed, title)
    if vae.config.z_dim == 2 and vae.config.condition == "none":
        names += latent_figures(out, mod, vae, data, title)
    return names


def two_layer_figures(out: Path, mod: ModuleType, vae: Any, data: RunData,
                      history: dict[str, list[float]], title: str, seed: int) -> list[str]:
    """A two-stochastic-layer run: ELBO curves, reconstructions E[x | z₁ = μ(x)] and prior
    samples E[x | z₁ = E[z₁|z₂]], z₂ ~ N(0, I); returns the PNG names written in ``out``."""
    save_figure(plots.elbo_curves(history, title), out / "elbo_curves.png")
    x = data.x_test[:16]
    save_figure(plots.reconstructions(x, mod.decode(vae, mod.encode(vae, x)[0]),
                                      data.image_shape,
                                      f"test images and reconstructions: {title}"),
                out / "reconstructions.png")
    z2 = np.random.default_rng(seed).standard_normal((64, vae.config.z_dims[1]))
    images = mod.decode(vae, mod.top_down(vae, z2.astype(np.float32)))
    save_figure(plots.image_grid(images, data.image_shape, 8, f"E[x|z₂], z₂ ~ p(z₂): {title}"),
                out / "samples.png")
    save_array(out / "samples.npy", images.astype(np.float32))
    return ["elbo_curves.png", "reconstructions.png", "samples.png"]


def reconstruction_figure(out: Path, mod: ModuleType, vae: Any, data: RunData, n: int,
                          title: str) -> list[str]:
    """Test images and E[x | z = μ(x)]."""
    x, c = arrays_for(vae.config, data.x_test[:n], None if data.y_test is None
                      else data.y_test[:n])
    mu, _ = mod.encode(vae, x, c)
    save_figure(plots.reconstructions(x, mod.decode(vae, mu, c), data.image_shape,
                                      f"test images and reconstructions: {title}",
                                      invert=ink(vae)),
                out / "reconstructions.png")
    return ["reconstructions.png"]


def prior_samples(mod: ModuleType, vae: Any, data: RunData, n: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str] | None]:
    """Means E[x|z(, c)] for z ~ p(z): (n, D), with row labels for a label-conditional VAE."""
    cfg = vae.config
    if cfg.condition == "label":
        per = max(1, n // cfg.n_classes)
        y = np.repeat(np.arange(cfg.n_classes), per)
        c = condition_vector(cfg, np.zeros((len(y), cfg.x_dim)), y)
        z = rng.standard_normal((len(y), cfg.z_dim)).astype(np.float32)
        return mod.decode(vae, z, c), [str(k) for k in range(cfg.n_classes)]
    c = None
    if cfg.condition == "observed":
        n = min(n, len(data.x_test))
        c = condition_vector(cfg, data.x_test[:n])
    z = rng.standard_normal((n, cfg.z_dim)).astype(np.float32)
    return mod.decode(vae, z, c), None


def sample_figure(out: Path, mod: ModuleType, vae: Any, data: RunData, n: int, seed: int,
                  title: str) -> list[str]:
    """Decoded means of prior samples (per class for a label-conditional VAE)."""
    images, rows = prior_samples(mod, vae, data, n, np.random.default_rng(seed))
    ncol = len(images) // len(rows) if rows else int(np.ceil(np.sqrt(len(images))))
    save_figure(plots.image_grid(images, data.image_shape, ncol,
                                 f"E[x|z], z ~ p(z): {title}", row_labels=rows,
                                 invert=ink(vae)),
                out / "samples.png")
    save_array(out / "samples.npy", images.astype(np.float32))
    return ["samples.png"]


def latent_figures(out: Path, mod: ModuleType, vae: Any, data: RunData,
                   title: str) -> list[str]:
    """The decoded manifold over Φ⁻¹ of a uniform grid, and the test-set means μ(x)."""
    n = 15 if data.x_test.shape[1] > 100 else 10
    g = ndtri(np.linspace(0.05, 0.95, n)).astype(np.float32)
    z1, z2 = np.meshgrid(g, g[::-1])  # columns: z₁ rising; rows: z₂ falling
    z = np.stack([z1, z2], -1).reshape(-1, 2)
    save_figure(plots.manifold(mod.decode(vae, z), data.image_shape,
                               f"decoded manifold E[x|z]: {title}", invert=ink(vae), grid=g),
                out / "manifold.png")
    mu, _ = mod.encode(vae, data.x_test)
    save_figure(plots.latent_scatter(mu, data.y_test, f"test-set μ(x): {title}"),
                out / "latent_means.png")
    return ["manifold.png", "latent_means.png"]


def run_title(run: Run) -> str:
    """The figure title of a trained run: dataset, backend, ELBO, latent size."""
    return f"{run.dataset}, {run.backend}, {run.elbo} ELBO, K={run.vae.config.z_dim}"


def bayes_figures(out: Path, mod: ModuleType, mean_vae: Any, sigma: dict[str, np.ndarray],
                  data: RunData, title: str, seed: int, bayes: BayesConfig,
                  n_theta: int = 20) -> list[str]:
    """Posterior-predictive samples averaged over θ, epistemic/aleatoric maps (written to
    ``uncertainty.npz`` too) and the σ histogram; returns the PNG names written in ``out``."""
    cfg = mean_vae.config
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    vaes = decoder_draws(mod, cfg, mod.weights(mean_vae), sigma, n_theta, rng)
    names = []
    if cfg.condition == "none":
        images = predictive_samples(mod, vaes, 64, rng)
        save_figure(plots.image_grid(images, data.image_shape, 8,
                                     f"E_q(θ) E[x|z,θ], z ~ p(z), {n_theta} θ draws: {title}",
                                     invert=ink(mean_vae)), out / "predictive_samples.png")
        names.append("predictive_samples.png")
        if cfg.decoder == "bernoulli":
            x = data.x_test[:12]
            mu, _ = mod.encode(mean_vae, x)
            u = uncertainty(mod, vaes, mu)
            save_figure(bplots.uncertainty_maps(x, u, data.image_shape,
                                                f"per-pixel predictive variance at z = μ(x): "
                                                f"{title}"), out / "uncertainty.png")
            buf = io.BytesIO()
            np.savez(buf, **u._asdict())
            atomic_write_bytes(out / "uncertainty.npz", buf.getvalue())
            names.append("uncertainty.png")
    save_figure(bplots.sigma_histogram(sigma, bayes.init_sigma, bayes.prior_scale,
                                       f"σ of q(θ): {title}"), out / "weight_sigma.png")
    return [*names, "weight_sigma.png"]


def uncertainty_means(out: Path) -> dict[str, float]:
    """Mean epistemic and aleatoric pixel variance from ``out/uncertainty.npz`` ({} if none)."""
    path = out / "uncertainty.npz"
    if not path.is_file():
        return {}
    with np.load(path) as u:
        return {"epistemic_variance_mean": float(u["epistemic"].mean()),
                "aleatoric_variance_mean": float(u["aleatoric"].mean())}
