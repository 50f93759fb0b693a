"""Training a VAE run: what ``varbayes vae train`` does, as a function of a :class:`TrainSpec`.

:func:`train_run` loads the data, builds the (conditional, optionally Bayesian-decoder) VAE
in the chosen backend, trains it with :func:`varbayes.inference.vi.svi.fit` (checkpointing
the run folder every epoch, resumable) and writes ``metrics.json`` and the figures into the
run folder (:mod:`.run` describes the folder).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference import ranks
from varbayes.inference.backends import model_module
from varbayes.inference.data import datasets
from varbayes.inference.io import write_metrics
from varbayes.inference.vae import figures
from varbayes.inference.vae.run import (
    CHECKPOINT,
    RunData,
    arrays_for,
    export_arrays,
    load_run_data,
    run_meta,
)
from varbayes.inference.vi.svi import IS_POINTS, SVIOptions, fit
from varbayes.models.bayesian_vae.config import BayesConfig, kl_weights
from varbayes.models.bayesian_vae.config import validate as validate_bayes
from varbayes.models.errors import check
from varbayes.models.vae.config import VAEConfig, condition_vector, n_params, validate
from varbayes.models.vae2.config import VAE2Config
from varbayes.models.vae2.config import n_params as n_params2
from varbayes.models.vae2.config import validate as validate2

#: Epochs when not given: small datasets need many passes for the same number of steps.
DEFAULT_EPOCHS = {"digits": 500, "frey-face": 500}
DEFAULT_EPOCHS_OTHER = 50


class TrainSpec(NamedTuple):
    """Everything a VAE run is trained from (the options of ``varbayes vae train``)."""

    dataset: str = "digits"
    """One of :data:`varbayes.inference.data.datasets.DATASETS`."""
    data_dir: str | None = None
    download: bool = False
    """Fetch missing dataset files (verified) before loading."""
    backend: str = "numpyro"
    elbo: str | None = None
    """``trace`` (estimator A) or ``meanfield`` (estimator B); None: see :func:`train_elbo`."""
    latent: int = 10
    hidden: tuple[int, ...] = (200,)
    activation: str = "tanh"
    decoder: str = "auto"
    """``bernoulli``, ``gaussian`` or ``auto`` (gaussian for frey-face)."""
    min_scale: float = 0.01
    binarize: str = "auto"
    conditional: str = "none"
    mask: str = "lower"
    epochs: int | None = None
    """None: :data:`DEFAULT_EPOCHS` for the dataset."""
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    particles: int = 1
    """L of the ELBO, K of ``iwae`` / ``dreg``."""
    objective: str = "elbo"
    """``elbo``, ``iwae`` or ``dreg`` (``SVIOptions.objective``)."""
    is_every: int = 0
    """Epochs between IS estimates on the evaluation sets (``SVIOptions.is_every``)."""
    is_particles: int = 100
    stochastic_layers: int = 1
    """1: the VAE of ``latent`` and ``hidden``; 2: the IWAE paper's two-stochastic-layer VAE
    (:mod:`varbayes.models.vae2`, its widths)."""
    weight_decay: float = 0.0
    """Precision λ of an N(0, λ⁻¹I) prior on the decoder weights (MAP); 0 for none."""
    bayesian: bool = False
    """A prior N(0, s²) and a mean-field Gaussian q(θ) over the decoder weights."""
    prior_scale: float = 1.0
    init_sigma: float = 1e-3
    init_std: float = 0.0
    jit: bool = True
    """Pyro: compile the ELBO (``compiler``)."""
    compiler: str = "auto"
    """Pyro with ``jit``: ``auto``, ``inductor`` or ``torchscript`` (``SVIOptions.compiler``)."""
    n_train: int | None = None
    n_test: int | None = None
    time_limit: float | None = None
    """Seconds: stop after the first epoch that ends past it."""
    devices: int = 1
    """NumPyro: JAX devices each batch is split over (``SVIOptions.devices``)."""
    resume: bool = False
    seed: int = 0


class TrainedRun(NamedTuple):
    """What :func:`train_run` returns."""

    metrics: dict[str, Any]
    """What was written to ``metrics.json``."""
    figures: list[str]
    """PNG names written into the run folder."""
    config: VAEConfig
    epochs: int
    """Epochs completed (including resumed ones)."""
    start_epoch: int
    """Epochs already done when this call started (0 for a fresh run)."""


def resolve_decoder(decoder: str, dataset: str) -> str:
    """``auto``: gaussian for frey-face (grey faces), else bernoulli."""
    if decoder != "auto":
        return decoder
    return "gaussian" if dataset == "frey-face" else "bernoulli"


def train_elbo(spec: TrainSpec) -> str:
    """The run's ELBO estimator: ``spec.elbo``, by default ``meanfield`` for one stochastic
    layer and ``trace`` for two. Estimator B's analytic KL needs latents that are independent
    under the guide, and the two-layer guide's q(z₂|z₁) is not: B is refused there."""
    if spec.elbo is None:
        return "trace" if spec.stochastic_layers == 2 else "meanfield"
    check(not (spec.elbo == "meanfield" and spec.stochastic_layers == 2),
          "--elbo meanfield takes each latent's KL in closed form, which needs latents that "
          "are independent under the guide; the two-layer guide draws z2 given z1: use "
          "--elbo trace (the default with --stochastic-layers 2)")
    return spec.elbo


def check_spec(spec: TrainSpec) -> None:
    """One-line errors for the options that can be checked before any data is read."""
    check(spec.latent > 0, f"--latent must be > 0, got {spec.latent}: pass a positive latent "
                           "size such as 2, 10 or 20")
    train_elbo(spec)


def make_config(spec: TrainSpec, data: RunData, decoder: str) -> VAEConfig:
    """The checked :class:`VAEConfig` of a run on ``data``."""
    config = VAEConfig(
        x_dim=data.x_train.shape[1], z_dim=spec.latent, hidden=tuple(spec.hidden),
        activation=spec.activation, decoder=decoder, min_scale=spec.min_scale,
        condition=spec.conditional, n_classes=data.n_classes,
        image_shape=data.image_shape if spec.conditional == "observed" else (),
        mask=spec.mask, prior_precision=spec.weight_decay, init_std=spec.init_std)
    return validate(config)


def make_bayes(spec: TrainSpec, config: VAEConfig) -> BayesConfig | None:
    """The checked :class:`BayesConfig` of a ``bayesian`` run (None otherwise)."""
    if not spec.bayesian:
        return None
    check(config.prior_precision == 0,
          f"--weight-decay {config.prior_precision} and --bayesian both put a prior on the "
          "decoder weights: with --bayesian set the prior with --prior-scale")
    check(not (spec.backend == "pyro" and spec.particles > 1),
          f"--bayesian with --backend pyro needs --particles 1 (got {spec.particles}): the "
          "vectorized Pyro particles do not broadcast over the weight draws; use --backend "
          "numpyro for L > 1")
    check(spec.objective == "elbo",
          f"--objective {spec.objective} weights per-datapoint latents, and --bayesian adds "
          "global ones (the decoder weights): train a Bayesian decoder with --objective elbo")
    return validate_bayes(BayesConfig(spec.prior_scale, spec.init_sigma))


def make_config2(spec: TrainSpec, config: VAEConfig) -> VAE2Config | None:
    """The :class:`VAE2Config` of a ``stochastic_layers=2`` run on the data of the one-layer
    ``config`` (None for one layer); one-line refusals for what it does not have."""
    check(spec.stochastic_layers in (1, 2),
          f"--stochastic-layers must be 1 or 2, got {spec.stochastic_layers}")
    if spec.stochastic_layers == 1:
        return None
    for flag, ok in (("--latent", spec.latent == TrainSpec._field_defaults["latent"]),
                     ("--hidden", tuple(spec.hidden) == TrainSpec._field_defaults["hidden"]),
                     ("--conditional", config.condition == "none"),
                     ("--decoder", config.decoder == "bernoulli"),
                     ("--weight-decay", config.prior_precision == 0),
                     ("--init-std", config.init_std == 0),
                     ("--bayesian", not spec.bayesian)):
        check(ok, f"{flag} is for one stochastic layer: --stochastic-layers 2 trains the IWAE "
                  "paper's architecture (z 100 and 50 units, tanh layers 200,200 and 100,100, "
                  "a Bernoulli decoder); leave it out")
    return validate2(VAE2Config(x_dim=config.x_dim, activation=config.activation))


def train_transform(config: VAEConfig, dynamic: bool) -> Any:
    """The per-minibatch transform of :func:`fit`: a fresh binarization when ``dynamic``."""
    def transform(batch: tuple[Any, ...], rng: np.random.Generator) -> tuple[Any, ...]:
        x, c = batch
        if dynamic:
            x = datasets.dynamic_binarize(x, rng)
            if config.condition == "observed":
                c = condition_vector(config, x)
        return x, c

    return transform


def bayes_metrics(metrics: dict[str, Any], loc: dict[str, np.ndarray],
                  sigma: dict[str, np.ndarray], bayes: BayesConfig, n_train: int
                  ) -> dict[str, float]:
    """The extra ``metrics.json`` keys of a ``--bayesian`` run, all in nats.

    A Bayesian run's ``test_elbo`` / ``train_elbo`` are the local per-datapoint bounds
    E_q(θ)[E_q(z|x)[log p(x|z,θ)] − KL(q(z|x)‖p(z))] (θ drawn from q(θ)), comparable with
    a MAP run's. ``kl_weights`` is KL(q(θ)‖p(θ)) per pass over the data, and
    ``train_bound`` the appendix-F bound on log p(training set) divided by N:
    ``train_elbo − kl_weights/N``.
    """
    kl = kl_weights(loc, sigma, bayes.prior_scale)
    all_sigma = np.concatenate([v.ravel() for v in sigma.values()])
    return {"kl_weights": kl, "kl_weights_per_datapoint": kl / n_train,
            "train_bound": metrics["train_elbo"] - kl / n_train,
            "prior_scale": bayes.prior_scale, "init_sigma": bayes.init_sigma,
            "n_weights": int(all_sigma.size), "sigma_median": float(np.median(all_sigma)),
            "n_params": metrics["n_params"] + int(all_sigma.size)}  # σ as well as μ


def train_run(spec: TrainSpec, out: Path) -> TrainedRun:
    """Train (or, with ``spec.resume``, continue) the run in the folder ``out`` (which must
    exist) and write its checkpoint, ``metrics.json`` and figures there."""
    check_spec(spec)
    ckpt = out / CHECKPOINT
    if spec.resume:
        check(ckpt.is_file(), f"--resume: no {CHECKPOINT} in {out}: train without --resume")
    else:
        check(not ckpt.exists(), f"{out} already holds a {CHECKPOINT}: pass --resume to "
                                 "continue it, or choose another --out")
    decoder = resolve_decoder(spec.decoder, spec.dataset)
    epochs = (DEFAULT_EPOCHS.get(spec.dataset, DEFAULT_EPOCHS_OTHER) if spec.epochs is None
              else spec.epochs)
    data = load_run_data(spec.dataset, spec.data_dir, decoder, spec.binarize, spec.n_train,
                         spec.n_test, spec.seed, download=spec.download)
    config = make_config(spec, data, decoder)
    bayes = make_bayes(spec, config)
    config2 = make_config2(spec, config)
    options = SVIOptions(backend=spec.backend, elbo=train_elbo(spec), particles=spec.particles,
                         optimizer=spec.optimizer, lr=spec.lr, epochs=epochs,
                         batch_size=spec.batch_size, seed=spec.seed, jit=spec.jit,
                         compiler=spec.compiler, time_limit=spec.time_limit,
                         devices=spec.devices, objective=spec.objective,
                         is_every=spec.is_every, is_particles=spec.is_particles)
    mod = model_module("vae" if config2 is None else "vae2", spec.backend)
    if config2 is not None:
        vae = mod.build(config2, seed=spec.seed)
        model, guide = mod.model, mod.guide

        def export(params: Any) -> dict[str, np.ndarray]:
            return export_arrays(mod.weights(mod.with_params(vae, params)))
    elif bayes is not None:
        bmod = model_module("bayesian_vae", spec.backend)
        vae = bmod.build(config, bayes, seed=spec.seed)
        model, guide = bmod.model, bmod.guide

        def export(params: Any) -> dict[str, np.ndarray]:
            t = bmod.with_params(vae, params)
            return export_arrays(bmod.weights(t), bmod.posterior(t)[1])
    else:
        vae = mod.build(config, seed=spec.seed)
        model, guide = mod.model, mod.guide

        def export(params: Any) -> dict[str, np.ndarray]:
            return export_arrays(mod.weights(mod.with_params(vae, params)))
    train = arrays_for(config, data.x_train, data.y_train)
    n_eval = len(data.x_train_eval)
    eval_sets = {"train": arrays_for(config, data.x_train_eval, data.y_train[:n_eval]
                                     if data.y_train is not None else None),
                 "test": arrays_for(config, data.x_test, data.y_test)}
    t0 = time.perf_counter()
    meta = run_meta(config if config2 is None else config2, spec.dataset, data.binarize,
                    spec.n_train, spec.n_test, bayes)
    result = fit(functools.partial(model, vae), functools.partial(guide, vae), train,
                 options=options, eval_sets=eval_sets,
                 transform=train_transform(config, data.binarize == "dynamic"), checkpoint=ckpt,
                 resume=spec.resume, meta=meta, eval_hide=("theta_prior",), export=export,
                 # like the MAP prior factor, KL(q(θ)‖p(θ)) stays out of the per-datapoint
                 # ELBOs (it is reported as kl_weights)
                 eval_global="drop" if bayes is not None else "once")
    wall = time.perf_counter() - t0
    if not ranks.is_main():  # the other ranks of a torch.distributed run write nothing
        return TrainedRun({}, [], config, result.epochs, result.start_epoch)
    if bayes is not None:
        posterior = bmod.with_params(vae, result.params)
        trained = mod.build(config, bmod.weights(posterior))  # θ at the posterior mean μ
    else:
        trained = mod.with_params(vae, result.params)
    h = result.history
    metrics = {
        "test_elbo": h["test_elbo"][-1], "best_test_elbo": max(h["test_elbo"]),
        "train_elbo": h["train_elbo"][-1], "train_objective": h["objective"][-1],
        "epochs": result.epochs, "seconds_per_epoch": float(np.median(h["seconds"])),
        "n_params": n_params(config) if config2 is None else n_params2(config2),
        "n_train": len(data.x_train), "n_test": len(data.x_test),
        "latent": config.z_dim if config2 is None else list(config2.z_dims),
        "stochastic_layers": spec.stochastic_layers,
        "particles": options.particles, "wall_seconds": wall,
        "devices": options.devices, "processes": ranks.world(), "objective": options.objective,
        # what a wall-clock budget bought, to restate runs at equal epochs: the load of the
        # machine, the pace, and the decoder evaluations of one epoch's training steps
        "load_average": os.getloadavg()[0],
        "epochs_per_second": (result.epochs - result.start_epoch) / max(wall, 1e-9),
        "decoder_evals_per_epoch": (len(data.x_train) // min(options.batch_size,
                                                             len(data.x_train)))
        * min(options.batch_size, len(data.x_train))
        * (options.particles + (options.objective == "wake-sleep")),  # + the sleep fantasy
    }
    if "is_epoch" in h:
        metrics.update(is_epoch=h["is_epoch"][-1], test_is=h["test_is"][-1],
                       train_is=h["train_is"][-1], is_particles=options.is_particles,
                       is_points=min(IS_POINTS, len(data.x_test)))
    metrics["elbo_gap"] = metrics["train_elbo"] - metrics["test_elbo"]
    names: list[str] = []
    if bayes is not None:
        loc, sigma = bmod.posterior(posterior)
        metrics.update(bayes_metrics(metrics, loc, sigma, bayes, len(data.x_train)))
        title = f"{spec.dataset}, {spec.backend}, Bayesian decoder, K={config.z_dim}"
        names += figures.bayes_figures(out, mod, trained, sigma, data, title, spec.seed, bayes)
        metrics.update(figures.uncertainty_means(out))
    else:
        check(metrics["n_params"] == result.n_params,
              "internal error: parameter count mismatch")
    write_metrics(out, metrics)
    what = (f"{options.elbo} ELBO" if spec.objective == "elbo"
            else f"{spec.objective}, {spec.particles} samples")
    if config2 is not None:
        title = f"{spec.dataset}, {spec.backend}, {what}, z {config2.z_dims[0]}+{config2.z_dims[1]}"
        names = figures.two_layer_figures(out, mod, trained, data, h, title, spec.seed)
    else:
        title = f"{spec.dataset}, {spec.backend}, {what}, K={config.z_dim}"
        names = figures.train_figures(out, mod, trained, data, h, title, spec.seed) + names
    return TrainedRun(metrics, names, config, result.epochs, result.start_epoch)
