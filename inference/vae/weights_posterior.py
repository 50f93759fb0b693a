"""NUTS cross-check of the Bayesian VAE's mean-field q(θ) on a tiny decoder.

A tiny Bayesian VAE (latent 2, a few tanh hidden units) is fitted by SVI on a few dozen
binarized images; NumPyro NUTS then samples the same model's posterior p(θ, z_1..N | x)
with the decoder weights θ and all latents z sampled jointly (the model of
:mod:`varbayes.models.bayesian_vae.numpyro_model` with ``n_data=None``). Both become
``arviz.InferenceData`` (:func:`varbayes.inference.workflow.diagnostics.from_draws` for the guide).

**Symmetries.** The posterior over MLP weights is invariant under permutations of the
hidden units and (tanh) sign flips of a unit's incoming and outgoing weights, and p(z) is
rotation-invariant, so marginals of individual hidden-layer weights are not comparable
between a multimodal NUTS posterior and a unimodal q(θ). We therefore compare
symmetry-invariant quantities: the output biases ``dec.out.bias`` (unchanged by any
hidden-unit permutation or sign flip) and the prior-predictive pixel probabilities
E[p(x_d = 1 | z, θ)] with z ~ p(z) (invariant under all of the above).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import check

INVARIANT = "theta.dec.out.bias"


class WeightsPosterior(NamedTuple):
    """What :func:`weights_posterior` returns."""

    nuts: Any
    """InferenceData of NUTS over θ and z (sites ``theta.dec.*`` and ``z``)."""
    svi: Any
    """InferenceData of draws from the SVI guide q(θ) (sites ``theta.dec.*``)."""
    summary: dict[str, float]
    """Comparison numbers (see :func:`compare_posteriors`)."""


def _predictive_pixels(bvae: Any, theta_draws: dict[str, np.ndarray], n_z: int,
                       seed: int) -> np.ndarray:
    """E over draws and z ~ p(z) of sigmoid(decoder logits): (D,) per-pixel probability."""
    import jax
    import jax.numpy as jnp

    from varbayes.models.bayesian_vae.numpyro_model import decode_with

    flat = {k.removeprefix("theta."): np.asarray(v).reshape(-1, *np.shape(v)[2:])
            for k, v in theta_draws.items()}
    z = jax.random.normal(jax.random.PRNGKey(seed), (n_z, bvae.config.z_dim))

    def one(theta: dict[str, Any]) -> Any:
        return jax.nn.sigmoid(decode_with(bvae, theta, z)[0]).mean(0)

    return np.asarray(jnp.mean(jax.lax.map(one, flat), axis=0))


def compare_posteriors(bvae: Any, nuts: Any, svi: Any, seed: int = 0) -> dict[str, float]:
    """Symmetry-invariant comparison of NUTS and q(θ), in the units of the quantities.

    Keys: ``out_bias_mean_abs_diff`` (mean |E_nuts − E_q| over the output biases),
    ``out_bias_sd_ratio_median`` (median sd_q / sd_nuts: < 1 means mean-field
    underdispersion), ``predictive_pixel_abs_diff`` (mean |p̄_nuts − p̄_q| over pixels),
    ``nuts_divergences``, ``nuts_rhat_max_out_bias``.
    """
    import arviz as az

    pn = nuts.posterior[INVARIANT].values
    ps = svi.posterior[INVARIANT].values
    mn, sn = pn.mean((0, 1)), pn.std((0, 1))
    ms, ss = ps.mean((0, 1)), ps.std((0, 1))
    keys = [k for k in svi.posterior.data_vars]
    p_n = _predictive_pixels(bvae, {k: nuts.posterior[k].values for k in keys}, 200, seed)
    p_s = _predictive_pixels(bvae, {k: svi.posterior[k].values for k in keys}, 200, seed)
    div = nuts.sample_stats["diverging"].values.sum() if "sample_stats" in nuts.groups() \
        and "diverging" in nuts.sample_stats else 0
    rhat = az.rhat(nuts, var_names=[INVARIANT])[INVARIANT].values
    return {"out_bias_mean_abs_diff": float(np.abs(mn - ms).mean()),
            "out_bias_sd_ratio_median": float(np.median(ss / sn)),
            "predictive_pixel_abs_diff": float(np.abs(p_n - p_s).mean()),
            "nuts_divergences": int(div), "nuts_rhat_max_out_bias": float(np.max(rhat))}


def weights_posterior(x: np.ndarray, *, hidden: int = 3, prior_scale: float = 1.0,
                      svi_epochs: int = 3000, lr: float = 1e-2, num_chains: int = 2,
                      num_warmup: int = 300, num_samples: int = 300, max_tree_depth: int = 8,
                      seed: int = 0, init_from_svi: bool = True) -> WeightsPosterior:
    """Fit q(θ) by SVI (full batch) and sample p(θ, z | x) by NUTS; compare them.

    Parameters
    ----------
    x : (N, D) binary images (a few dozen, e.g. 8×8 digits).
    hidden : hidden units of the one-layer tanh decoder (and encoder); latent size 2.
    prior_scale : s of the prior N(0, s²) on every decoder weight.
    svi_epochs, lr : full-batch SVI steps (TraceMeanField ELBO, Adam) and step size.
    num_chains, num_warmup, num_samples, max_tree_depth : NUTS settings (NumPyro; chains run
        sequentially on CPU).
    init_from_svi : start NUTS at q(θ)'s means and the encoder means of z.
    """
    from varbayes.inference.vi.svi import SVIOptions, fit
    from varbayes.models.bayesian_vae import numpyro_model as nbv
    from varbayes.models.bayesian_vae.config import BayesConfig
    from varbayes.models.vae.config import VAEConfig, check_data

    x = np.asarray(x, np.float32)
    check(x.ndim == 2 and 2 <= len(x) <= 500, f"x must be (N, D) with 2 <= N <= 500 images, "
                                               f"got shape {x.shape}")
    check(hidden >= 1, f"hidden must be >= 1, got {hidden}")
    config = VAEConfig(x_dim=x.shape[1], z_dim=2, hidden=(hidden,))
    x = check_data(x, config, "weights-posterior data")
    bvae = nbv.build(config, BayesConfig(prior_scale, 0.05), seed=seed)
    r = fit(functools.partial(nbv.model, bvae), functools.partial(nbv.guide, bvae), (x, None),
            options=SVIOptions(backend="numpyro", epochs=svi_epochs, batch_size=len(x), lr=lr,
                               seed=seed, eval_batch_size=len(x)))
    trained = nbv.with_params(bvae, r.params)
    res = nuts_vs_q(trained, x, num_chains=num_chains, num_warmup=num_warmup,
                    num_samples=num_samples, max_tree_depth=max_tree_depth, seed=seed,
                    init_from_q=init_from_svi)
    res.summary.update({"svi_final_elbo": float(r.history["objective"][-1]), "hidden": hidden})
    return res


def nuts_vs_q(trained: Any, x: np.ndarray, c: np.ndarray | None = None, *,
              num_chains: int = 2, num_warmup: int = 300, num_samples: int = 300,
              max_tree_depth: int = 8, seed: int = 0, init_from_q: bool = True,
              progress_bar: bool = False) -> WeightsPosterior:
    """NUTS on p(θ, z_1..N | x) of a trained NumPyro Bayesian VAE, against its q(θ).

    Parameters
    ----------
    trained : :class:`varbayes.models.bayesian_vae.numpyro_model.BayesianVAE` with the learned q(θ).
    x : (N, D) the binary images q(θ) was fitted to; c : (N, C) conditioning or None.
    num_chains, num_warmup, num_samples, max_tree_depth : NumPyro NUTS settings.
    init_from_q : start NUTS at q(θ)'s means and the encoder means of z.
    """
    from varbayes.inference.mcmc.nuts import nuts
    from varbayes.inference.workflow.diagnostics import from_draws
    from varbayes.models.bayesian_vae import numpyro_model as nbv
    from varbayes.models.bayesian_vae.config import site

    check(num_samples >= 1, f"--samples must be >= 1, got {num_samples}")
    loc, sigma = nbv.posterior(trained)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 41]))
    draws = {site(k): loc[k] + sigma[k] * rng.standard_normal((num_chains, num_samples,
                                                                *loc[k].shape))
             for k in loc}
    svi = from_draws(draws)
    init = None
    if init_from_q:
        mu, _ = nbv.vae_model.encode(trained, x, c)
        init = {**{site(k): v for k, v in loc.items()}, "z": mu}
    idata = nuts(nbv.model, trained, x, c, backend="numpyro", num_chains=num_chains,
                 num_warmup=num_warmup, num_samples=num_samples, seed=seed, init=init,
                 max_tree_depth=max_tree_depth, progress_bar=progress_bar)
    summary = compare_posteriors(trained, idata, svi, seed)
    summary.update({"n_images": len(x), "n_weights": int(sum(v.size for v in loc.values()))})
    return WeightsPosterior(idata, svi, summary)


#: Largest training set for which ``varbayes mcmc --target weights`` runs NUTS over θ and
#: every z_i jointly.
MAX_RUN_IMAGES = 500


def run_weights_posterior(run_dir: str | Path, data_dir: str | None = None, *,
                          num_chains: int = 2, num_warmup: int = 300, num_samples: int = 300,
                          max_tree_depth: int = 8, seed: int = 0, progress_bar: bool = False
                          ) -> WeightsPosterior:
    """:func:`nuts_vs_q` for a ``varbayes vae train --bayesian`` run (either backend).

    The target is the posterior the run's q(θ) approximates: θ and the latents of all of
    the run's training images (binarized once, seeded, when the run binarizes dynamically),
    under the run's prior. NUTS runs on the NumPyro twin of the model with the run's
    weights; the run must have at most :data:`MAX_RUN_IMAGES` training images.
    """
    from varbayes.inference.data import datasets
    from varbayes.inference.vae.run import arrays_for, is_bayesian, load_run, read_header
    from varbayes.models.bayesian_vae import numpyro_model as nbv
    from varbayes.models.bayesian_vae.config import BayesConfig, softplus_inv

    check(is_bayesian(read_header(run_dir)),
          f"{run_dir} is a plain VAE run (point-estimate decoder): --target weights needs a "
          "Bayesian decoder, so train with 'varbayes vae train --bayesian'")
    run = load_run(run_dir, data_dir)
    sigma = run.sigma
    n = len(run.data.x_train)
    check(n <= MAX_RUN_IMAGES,
          f"{run_dir} was trained on {n} images: NUTS over the decoder weights and every "
          f"latent is only practical for <= {MAX_RUN_IMAGES}; train a small Bayesian run "
          "with --n-train, e.g. --n-train 100 --hidden 8 --latent 2")
    meta = run.header["meta"]
    config = run.vae.config
    x, y = run.data.x_train, run.data.y_train
    if run.data.binarize == "dynamic":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 43]))
        x = datasets.dynamic_binarize(x, rng)
    x, c = arrays_for(config, x, y)
    weights = run.mod.weights(run.vae)
    rho = {k: softplus_inv(v).astype(np.float32) for k, v in sigma.items()}
    trained = nbv.build(config, BayesConfig.from_dict(meta["bayes"]),
                        {k: np.asarray(v) for k, v in weights.items()}, rho)
    return nuts_vs_q(trained, x, c, num_chains=num_chains, num_warmup=num_warmup,
                     num_samples=num_samples, max_tree_depth=max_tree_depth, seed=seed,
                     progress_bar=progress_bar)


def plot_overlay(result: WeightsPosterior, out: str | Path, n: int = 8) -> Path:
    """Marginals of the first ``n`` output biases (symmetry-invariant): NUTS histograms
    with the q(θ) draws overlaid. Writes ``weights_marginals.png`` in ``out``."""
    from varbayes.inference.io import save_figure
    from varbayes.models.vae.plots import _plt

    plt = _plt()
    pn = result.nuts.posterior[INVARIANT].values.reshape(-1, result.nuts.posterior[
        INVARIANT].shape[-1])
    ps = result.svi.posterior[INVARIANT].values.reshape(-1, pn.shape[-1])
    idx = np.argsort(-pn.std(0))[:n]  # the widest NUTS marginals
    fig, axes = plt.subplots(2, (len(idx) + 1) // 2, figsize=(2.2 * ((len(idx) + 1) // 2), 4))
    for ax, d in zip(np.ravel(axes), idx, strict=False):
        bins = np.linspace(min(pn[:, d].min(), ps[:, d].min()),
                           max(pn[:, d].max(), ps[:, d].max()), 30)
        ax.hist(pn[:, d], bins=bins, density=True, alpha=0.5, label="NUTS")
        ax.hist(ps[:, d], bins=bins, density=True, histtype="step", color="k", label="SVI q(θ)")
        ax.set_title(f"dec.out.bias[{d}]", fontsize=8)
        ax.set_yticks([])
    np.ravel(axes)[0].legend(fontsize=7)
    fig.suptitle("output-bias marginals (invariant to hidden-unit permutations and sign flips)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(out) / "weights_marginals.png")
