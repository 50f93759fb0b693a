"""``varbayes vae train | sample | reconstruct | inpaint``: the AEVB variational autoencoder.

A run folder holds ``checkpoint.npz`` (training state, the flat weights under ``export/``,
and a JSON header with the configuration), ``metrics.json`` and the figures. The other
subcommands read only the checkpoint, so they work on any finished or interrupted run.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import norm

from inference import datasets
from inference.errors import VarbayesError, check
from inference.io import out_dir, save_figure, write_metrics
from inference.svi import BACKENDS, ELBOS, OPTIMIZERS, SVIOptions, fit, load_checkpoint
from models.vae import plots
from models.vae.config import (
    ACTIVATIONS,
    CONDITIONS,
    MASKS,
    VAEConfig,
    check_data,
    condition_vector,
    hidden_mask,
    n_params,
    validate,
)
from models.vae.evaluate import elbo_b, masked_log_likelihood

CHECKPOINT = "checkpoint.npz"
#: ``--epochs`` when not given: small datasets need many passes for the same step count.
DEFAULT_EPOCHS = {"digits": 500, "frey-face": 500}
DEFAULT_EPOCHS_OTHER = 50
BINARIZE = ("auto", "dynamic", "static", "none")


def bayes_module(name: str) -> ModuleType:
    """:mod:`models.bayesian_vae.pyro_model` or :mod:`models.bayesian_vae.numpyro_model`."""
    if name == "pyro":
        from models.bayesian_vae import pyro_model

        return pyro_model
    from models.bayesian_vae import numpyro_model

    return numpyro_model


def backend_module(name: str) -> ModuleType:
    """:mod:`models.vae.pyro_model` or :mod:`models.vae.numpyro_model`."""
    if name == "pyro":
        from models.vae import pyro_model

        return pyro_model
    from models.vae import numpyro_model

    return numpyro_model


# ------------------------------------------------------------------------------ the data

class RunData(NamedTuple):
    """The arrays one run trains and evaluates on, after subsetting and checks."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    """Evaluation targets: binarized once (seeded) unless ``binarize == "none"``."""
    y_test: np.ndarray | None
    x_train_eval: np.ndarray
    """A fixed training subset (as large as the test set), binarized like the test set."""
    image_shape: tuple[int, int]
    binarize: str
    """``dynamic``, ``static`` or ``none`` (resolved from ``auto``)."""
    n_classes: int


def resolve_binarize(binarize: str, decoder: str, binary: bool) -> str:
    """``auto``: dynamic for a Bernoulli decoder on grey data, else none."""
    if binarize == "auto":
        return "dynamic" if decoder == "bernoulli" and not binary else "none"
    check(not (binarize != "none" and decoder == "gaussian"),
          f"--binarize {binarize} makes no sense with a Gaussian decoder: pass --binarize none")
    return binarize


def load_run_data(dataset: str, data_dir: str | None, decoder: str, binarize: str,
                  n_train: int | None, n_test: int | None, seed: int,
                  download: bool = False) -> RunData:
    """Load, subset, check and (for ``static``) binarize a dataset for one run.

    ``download`` fetches missing files from the canonical source first (verified).
    """
    d = datasets.load(dataset, data_dir, download=download)
    for flag, n in (("--n-train", n_train), ("--n-test", n_test)):
        check(n is None or n >= 1, f"{flag} must be >= 1, got {n}")
    x_tr, x_te = d.x_train[:n_train], d.x_test[:n_test]
    y_tr = None if d.y_train is None else d.y_train[:n_train]
    y_te = None if d.y_test is None else d.y_test[:n_test]
    binarize = resolve_binarize(binarize, decoder, d.binary)
    probe = VAEConfig(x_dim=x_tr.shape[1], z_dim=1, decoder=decoder)
    x_tr = check_data(x_tr, probe, f"{dataset} training data")
    x_te = check_data(x_te, probe, f"{dataset} test data")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    if binarize == "static":
        x_tr = datasets.dynamic_binarize(x_tr, rng)
    n_eval = min(len(x_tr), len(x_te))
    x_tr_eval = x_tr[:n_eval]
    if binarize == "dynamic":  # evaluation targets are drawn once, so epochs compare
        x_te = datasets.dynamic_binarize(x_te, rng)
        x_tr_eval = datasets.dynamic_binarize(x_tr_eval, rng)
    elif binarize == "static":
        x_te = datasets.dynamic_binarize(x_te, rng)
    n_classes = 0 if d.y_train is None else int(d.y_train.max()) + 1
    return RunData(x_tr, y_tr, x_te, y_te, x_tr_eval, tuple(d.image_shape), binarize,
                   n_classes)


def arrays_for(config: VAEConfig, x: np.ndarray, y: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, c): the model's batch arrays, with c built from labels or visible pixels."""
    return x, condition_vector(config, x, y)


def _transform(config: VAEConfig, dynamic: bool) -> Any:
    def transform(batch: tuple[Any, ...], rng: np.random.Generator) -> tuple[Any, ...]:
        x, c = batch
        if dynamic:
            x = datasets.dynamic_binarize(x, rng)
            if config.condition == "observed":
                c = condition_vector(config, x)
        return x, c

    return transform


# ------------------------------------------------------------------------------- a run

class Run(NamedTuple):
    """A trained run read back from its checkpoint."""

    mod: ModuleType
    vae: Any
    header: dict[str, Any]
    data: RunData


def load_run(run_dir: str | Path, data_dir: str | None = None) -> Run:
    """Rebuild the VAE of a run folder from ``checkpoint.npz`` (never unpickles)."""
    path = Path(run_dir) / CHECKPOINT
    check(Path(run_dir).is_dir(), f"run folder {run_dir} does not exist: pass the --out of "
                                  "a 'varbayes vae train' run")
    arrays, header = load_checkpoint(path)
    meta = header.get("meta", {})
    check("vae" in meta and "run" in meta,
          f"{path} is not a VAE checkpoint: pass the --out of a 'varbayes vae train' run")
    config = VAEConfig.from_dict(meta["vae"])
    weights = {k[len("export/"):]: v for k, v in arrays.items()
               if k.startswith("export/") and not k.startswith("export/sigma/")}
    mod = backend_module(header["backend"])
    vae = mod.build(config, weights)
    r = meta["run"]
    data = load_run_data(r["dataset"], data_dir, config.decoder, r["binarize"],
                         r["n_train"], r["n_test"], int(header["options"]["seed"]))
    return Run(mod, vae, header, data)


def load_sigma(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """σ of q(θ) per decoder weight of a ``--bayesian`` run (None for a MAP/ML VAE run).

    :func:`load_run` gives the VAE with θ at the posterior mean μ; with this the run's
    q(θ) = N(μ, σ²) is complete.
    """
    arrays, header = load_checkpoint(Path(run_dir) / CHECKPOINT)
    if "bayes" not in header.get("meta", {}):
        return None
    return {k[len("export/sigma/"):]: v for k, v in arrays.items()
            if k.startswith("export/sigma/")}


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VarbayesError(f"--hidden must be comma-separated widths like 400 or 200,200, "
                            f"got {text!r}") from None
    return sizes


def _config(args: argparse.Namespace, data: RunData) -> VAEConfig:
    config = VAEConfig(
        x_dim=data.x_train.shape[1], z_dim=args.latent, hidden=_hidden(args.hidden),
        activation=args.activation, decoder=args.decoder, min_scale=args.min_scale,
        condition=args.conditional, n_classes=data.n_classes,
        image_shape=data.image_shape if args.conditional == "observed" else (),
        mask=args.mask, prior_precision=args.weight_decay, init_std=args.init_std)
    return validate(config)


def _decoder(args: argparse.Namespace) -> str:
    if args.decoder != "auto":
        return args.decoder
    return "gaussian" if args.dataset == "frey-face" else "bernoulli"


def train_run(args: argparse.Namespace, verbose: bool = True) -> dict[str, Any]:
    """Everything ``vae train`` does; returns the metrics written to ``metrics.json``."""
    check(args.latent > 0, f"--latent must be > 0, got {args.latent}: pass a positive latent "
                           "size such as 2, 10 or 20")
    if args.torch_threads is not None:
        check(args.torch_threads >= 1, f"--torch-threads must be >= 1, got {args.torch_threads}")
        import torch

        torch.set_num_threads(args.torch_threads)
    out = out_dir(args.out)
    ckpt = out / CHECKPOINT
    if args.resume:
        check(ckpt.is_file(), f"--resume: no {CHECKPOINT} in {out}: train without --resume")
    else:
        check(not ckpt.exists(), f"{out} already holds a {CHECKPOINT}: pass --resume to "
                                 "continue it, or choose another --out")
    args.decoder = _decoder(args)
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS.get(args.dataset, DEFAULT_EPOCHS_OTHER)
    data = load_run_data(args.dataset, args.data_dir, args.decoder, args.binarize,
                         args.n_train, args.n_test, args.seed,
                         download=getattr(args, "download", False))
    config = _config(args, data)
    bayes = _bayes(args, config)
    options = SVIOptions(backend=args.backend, elbo=args.elbo, particles=args.particles,
                         optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed, jit=not args.no_jit,
                         time_limit=None if args.time_limit is None else 60 * args.time_limit)
    mod = backend_module(args.backend)
    if bayes is not None:
        bmod = bayes_module(args.backend)
        vae = bmod.build(config, bayes, seed=args.seed)
        model, guide = bmod.model, bmod.guide

        def export(params: Any) -> dict[str, np.ndarray]:
            t = bmod.with_params(vae, params)
            return {**bmod.weights(t),
                    **{f"sigma/{k}": v for k, v in bmod.posterior(t)[1].items()}}
    else:
        vae = mod.build(config, seed=args.seed)
        model, guide = mod.model, mod.guide

        def export(params: Any) -> dict[str, np.ndarray]:
            return mod.weights(mod.with_params(vae, params))
    run_meta = {"dataset": args.dataset, "binarize": data.binarize, "n_train": args.n_train,
                "n_test": args.n_test}
    train = arrays_for(config, data.x_train, data.y_train)
    n_eval = len(data.x_train_eval)
    eval_sets = {"train": arrays_for(config, data.x_train_eval, data.y_train[:n_eval]
                                     if data.y_train is not None else None),
                 "test": arrays_for(config, data.x_test, data.y_test)}
    t0 = time.perf_counter()
    meta = {"vae": config._asdict(), "run": run_meta}
    if bayes is not None:
        meta["bayes"] = bayes._asdict()
    result = fit(functools.partial(model, vae), functools.partial(guide, vae), train,
                 options=options, eval_sets=eval_sets,
                 transform=_transform(config, data.binarize == "dynamic"), checkpoint=ckpt,
                 resume=args.resume, meta=meta, eval_hide=("theta_prior",), export=export,
                 # like the MAP prior factor, KL(q(θ)‖p(θ)) stays out of the per-datapoint
                 # ELBOs (it is reported as kl_weights)
                 eval_global="drop" if bayes is not None else "once")
    wall = time.perf_counter() - t0
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
        "n_params": n_params(config), "n_train": len(data.x_train), "n_test": len(data.x_test),
        "latent": config.z_dim, "particles": options.particles, "wall_seconds": wall,
    }
    metrics["elbo_gap"] = metrics["train_elbo"] - metrics["test_elbo"]
    figures: list[str] = []
    if bayes is not None:
        loc, sigma = bmod.posterior(posterior)
        metrics.update(bayes_metrics(metrics, loc, sigma, bayes, len(data.x_train)))
        figures += bayes_figures(out, mod, trained, sigma, data, args)
        metrics.update(_uncertainty_means(out))
    else:
        check(metrics["n_params"] == result.n_params,
              "internal error: parameter count mismatch")
    write_metrics(out, metrics)
    figures = train_figures(out, mod, trained, data, h, args) + figures
    if not verbose:
        return metrics
    print(f"varbayes vae train: {args.dataset}, {args.backend} {args.elbo} ELBO, "
          f"{config.x_dim}-{'-'.join(map(str, config.hidden))}-{config.z_dim}, "
          f"{result.epochs} epochs ({result.start_epoch} resumed), "
          f"{metrics['seconds_per_epoch']:.3g} s/epoch")
    print(f"  test ELBO {metrics['test_elbo']:.3f} nats/datapoint (best "
          f"{metrics['best_test_elbo']:.3f}), train ELBO {metrics['train_elbo']:.3f}")
    if bayes is not None:
        print(f"  Bayesian decoder: KL(q(θ)‖p(θ)) = {metrics['kl_weights']:.1f} nats per pass "
              f"over the data ({metrics['kl_weights_per_datapoint']:.3f} per training point); "
              f"appendix-F bound {metrics['train_bound']:.3f} per training point")
    print(f"  wrote {out / 'metrics.json'}, {ckpt.name}, {', '.join(figures)}")
    return metrics


def _bayes(args: argparse.Namespace, config: VAEConfig) -> Any:
    """The :class:`BayesConfig` of a ``--bayesian`` run (None otherwise), checked."""
    if not getattr(args, "bayesian", False):
        return None
    from models.bayesian_vae.config import BayesConfig
    from models.bayesian_vae.config import validate as validate_bayes

    check(config.prior_precision == 0,
          f"--weight-decay {config.prior_precision} and --bayesian both put a prior on the "
          "decoder weights: with --bayesian set the prior with --prior-scale")
    check(not (args.backend == "pyro" and args.particles > 1),
          f"--bayesian with --backend pyro needs --particles 1 (got {args.particles}): the "
          "vectorized Pyro particles do not broadcast over the weight draws; use --backend "
          "numpyro for L > 1")
    return validate_bayes(BayesConfig(args.prior_scale, args.init_sigma))


def bayes_metrics(metrics: dict[str, Any], loc: dict[str, np.ndarray],
                  sigma: dict[str, np.ndarray], bayes: Any, n_train: int) -> dict[str, float]:
    """The extra ``metrics.json`` keys of a ``--bayesian`` run, all in nats.

    A Bayesian run's ``test_elbo`` / ``train_elbo`` are the local per-datapoint bounds
    E_q(θ)[E_q(z|x)[log p(x|z,θ)] − KL(q(z|x)‖p(z))] (θ drawn from q(θ)), comparable with
    a MAP run's. ``kl_weights`` is KL(q(θ)‖p(θ)) per pass over the data, and
    ``train_bound`` the appendix-F bound on log p(training set) divided by N:
    ``train_elbo − kl_weights/N``.
    """
    from models.bayesian_vae.config import kl_weights

    kl = kl_weights(loc, sigma, bayes.prior_scale)
    all_sigma = np.concatenate([v.ravel() for v in sigma.values()])
    return {"kl_weights": kl, "kl_weights_per_datapoint": kl / n_train,
            "train_bound": metrics["train_elbo"] - kl / n_train,
            "prior_scale": bayes.prior_scale, "init_sigma": bayes.init_sigma,
            "n_weights": int(all_sigma.size), "sigma_median": float(np.median(all_sigma)),
            "n_params": metrics["n_params"] + int(all_sigma.size)}  # σ as well as μ


def bayes_figures(out: Path, mod: ModuleType, mean_vae: Any, sigma: dict[str, np.ndarray],
                  data: RunData, args: argparse.Namespace, n_theta: int = 20) -> list[str]:
    """Posterior-predictive samples averaged over θ, epistemic/aleatoric maps, σ histogram."""
    from models.bayesian_vae import plots as bplots
    from models.bayesian_vae.predictive import decoder_draws, predictive_samples, uncertainty

    cfg = mean_vae.config
    title = f"{args.dataset}, {args.backend}, Bayesian decoder, K={cfg.z_dim}"
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 23]))
    vaes = decoder_draws(mod, cfg, mod.weights(mean_vae), sigma, n_theta, rng)
    names = []
    if cfg.condition == "none":
        images = predictive_samples(mod, vaes, 64, rng)
        save_figure(plots.image_grid(images, data.image_shape, 8,
                                     f"E_q(θ) E[x|z,θ], z ~ p(z), {n_theta} θ draws: {title}",
                                     invert=_ink(mean_vae)), out / "predictive_samples.png")
        names.append("predictive_samples.png")
        if cfg.decoder == "bernoulli":
            x = data.x_test[:12]
            mu, _ = mod.encode(mean_vae, x)
            u = uncertainty(mod, vaes, mu)
            save_figure(bplots.uncertainty_maps(x, u, data.image_shape,
                                                f"per-pixel predictive variance at z = μ(x): "
                                                f"{title}"), out / "uncertainty.png")
            np.savez(out / "uncertainty.npz", **u._asdict())
            names.append("uncertainty.png")
    save_figure(bplots.sigma_histogram(sigma, args.init_sigma, args.prior_scale,
                                       f"σ of q(θ): {title}"), out / "weight_sigma.png")
    return [*names, "weight_sigma.png"]


def _uncertainty_means(out: Path) -> dict[str, float]:
    path = out / "uncertainty.npz"
    if not path.is_file():
        return {}
    with np.load(path) as u:
        return {"epistemic_variance_mean": float(u["epistemic"].mean()),
                "aleatoric_variance_mean": float(u["aleatoric"].mean())}


def _train(args: argparse.Namespace) -> int:
    train_run(args)
    return 0


def demo_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """The ``vae`` part of ``varbayes demo``: a 2-D latent VAE on the embedded digits."""
    from inference.cli import build_parser

    epochs = "20" if quick else "300"
    args = build_parser().parse_args(["vae", "train", "--dataset", "digits", "--latent", "2",
                                      "--epochs", epochs, "--seed", str(seed),
                                      "--out", str(out), "--quiet"])
    (out / CHECKPOINT).unlink(missing_ok=True)  # the demo always starts afresh
    m = train_run(args, verbose=False)
    return {k: float(m[k]) for k in ("test_elbo", "best_test_elbo", "train_elbo", "epochs",
                                     "seconds_per_epoch")}


def _ink(vae: Any) -> bool:
    """Draw 1 as dark ink for binary-like data; grey images (Gaussian decoder) as they are."""
    return vae.config.decoder == "bernoulli"


def train_figures(out: Path, mod: ModuleType, vae: Any, data: RunData,
                  history: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    """ELBO curves, reconstructions, prior samples and, for K = 2, the manifold and the
    test-set latent means."""
    title = f"{args.dataset}, {args.backend}, {args.elbo} ELBO, K={vae.config.z_dim}"
    save_figure(plots.elbo_curves(history, title), out / "elbo_curves.png")
    names = ["elbo_curves.png"]
    names += reconstruction_figure(out, mod, vae, data, 16, title)
    names += sample_figure(out, mod, vae, data, 64, args.seed, title)
    if vae.config.z_dim == 2 and vae.config.condition == "none":
        names += latent_figures(out, mod, vae, data, title)
    return names


def reconstruction_figure(out: Path, mod: ModuleType, vae: Any, data: RunData, n: int,
                          title: str) -> list[str]:
    """Test images and E[x | z = μ(x)]."""
    x, c = arrays_for(vae.config, data.x_test[:n], None if data.y_test is None
                      else data.y_test[:n])
    mu, _ = mod.encode(vae, x, c)
    save_figure(plots.reconstructions(x, mod.decode(vae, mu, c), data.image_shape,
                                      f"test images and reconstructions: {title}",
                                      invert=_ink(vae)),
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
                                 invert=_ink(vae)),
                out / "samples.png")
    np.save(out / "samples.npy", images.astype(np.float32))
    return ["samples.png"]


def latent_figures(out: Path, mod: ModuleType, vae: Any, data: RunData,
                   title: str) -> list[str]:
    """The decoded manifold over Φ⁻¹ of a uniform grid, and the test-set means μ(x)."""
    n = 15 if data.x_test.shape[1] > 100 else 10
    g = norm.ppf(np.linspace(0.05, 0.95, n)).astype(np.float32)
    z1, z2 = np.meshgrid(g, g[::-1])  # columns: z₁ rising; rows: z₂ falling
    z = np.stack([z1, z2], -1).reshape(-1, 2)
    save_figure(plots.manifold(mod.decode(vae, z), data.image_shape,
                               f"decoded manifold: {title}", invert=_ink(vae)),
                out / "manifold.png")
    mu, _ = mod.encode(vae, data.x_test)
    save_figure(plots.latent_scatter(mu, data.y_test, f"test-set μ(x): {title}"),
                out / "latent_means.png")
    return ["manifold.png", "latent_means.png"]


# ------------------------------------------------------------------ sample / reconstruct

def _run_title(run: Run) -> str:
    r = run.header["meta"]["run"]
    return (f"{r['dataset']}, {run.header['backend']}, {run.header['options']['elbo']} ELBO, "
            f"K={run.vae.config.z_dim}")


def _sample(args: argparse.Namespace) -> int:
    check(args.n >= 1, f"--n must be >= 1, got {args.n}")
    run = load_run(args.run_dir, args.data_dir)
    out = out_dir(args.out)
    names = sample_figure(out, run.mod, run.vae, run.data, args.n, args.seed, _run_title(run))
    images = np.load(out / "samples.npy")
    write_metrics(out, {"n_samples": len(images), "mean_intensity": float(images.mean())})
    print(f"varbayes vae sample: {len(images)} prior samples from {args.run_dir}; wrote "
          f"{', '.join(names)}, samples.npy, metrics.json in {out}")
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    check(args.n >= 1, f"--n must be >= 1, got {args.n}")
    run = load_run(args.run_dir, args.data_dir)
    out = out_dir(args.out)
    cfg, data = run.vae.config, run.data
    names = reconstruction_figure(out, run.mod, run.vae, data, args.n, _run_title(run))
    x, c = arrays_for(cfg, data.x_test, data.y_test)
    elbo = elbo_b(run.mod, run.vae, x, c, np.random.default_rng(args.seed))
    mu, _ = run.mod.encode(run.vae, x, c)
    rec = run.mod.log_likelihood(run.vae, x, mu, c).sum(-1)
    write_metrics(out, {"test_elbo": float(elbo.mean()),
                        "test_elbo_stderr": float(elbo.std(ddof=1) / np.sqrt(len(elbo)))
                        if len(elbo) > 1 else 0.0,
                        "reconstruction_log_likelihood": float(rec.mean()),
                        "n_test": len(x)})
    print(f"varbayes vae reconstruct: test ELBO {elbo.mean():.3f} nats/datapoint (estimator B, "
          f"one z each), log p(x|z=μ(x)) {rec.mean():.3f}; wrote {', '.join(names)}, "
          f"metrics.json in {out}")
    return 0


def _inpaint(args: argparse.Namespace) -> int:
    check(args.n >= 1, f"--n must be >= 1, got {args.n}")
    check(args.k >= 1, f"--k must be >= 1, got {args.k}")
    check(args.n_eval >= 1, f"--n-eval must be >= 1, got {args.n_eval}")
    run = load_run(args.run_dir, args.data_dir)
    cfg, data = run.vae.config, run.data
    check(cfg.condition == "observed",
          f"vae inpaint needs a run trained with --conditional observed; {args.run_dir} was "
          f"trained with --conditional {cfg.condition}")
    out = out_dir(args.out)
    hidden = hidden_mask(cfg)
    x = data.x_test[: args.n_eval]
    c = condition_vector(cfg, x)
    res = masked_log_likelihood(run.mod, run.vae, x, c, hidden, np.random.default_rng(args.seed),
                                k=args.k)
    p = np.clip(data.x_train.mean(0), 1e-3, 1 - 1e-3)[hidden]
    if cfg.decoder == "bernoulli":
        base = (x[:, hidden] * np.log(p) + (1 - x[:, hidden]) * np.log1p(-p)).sum(-1)
    else:
        sd = np.maximum(data.x_train.std(0)[hidden], cfg.min_scale)
        base = norm.logpdf(x[:, hidden], p, sd).sum(-1)
    n = min(args.n, len(x))
    masked = x[:n].copy()
    masked[:, hidden] = 0.5
    save_figure(plots.inpainting(x[:n], masked, res.filled[:n], res.samples[:, :n],
                                 data.image_shape,
                                 f"inpainting the {cfg.mask} half: {_run_title(run)}",
                                 invert=_ink(run.vae)),
                out / "inpainting.png")
    metrics = {"masked_log_likelihood": float(res.log_lik.mean()),
               "masked_log_likelihood_stderr": float(res.log_lik.std(ddof=1)
                                                     / np.sqrt(len(x))) if len(x) > 1 else 0.0,
               "masked_log_likelihood_per_pixel": float(res.log_lik.mean() / hidden.sum()),
               "baseline_masked_log_likelihood": float(base.mean()),
               "masked_pixels": int(hidden.sum()), "k": args.k, "n_images": len(x),
               "min_ess": float(res.ess.min()), "median_ess": float(np.median(res.ess))}
    write_metrics(out, metrics)
    print(f"varbayes vae inpaint: log p(hidden {cfg.mask} half | visible) = "
          f"{metrics['masked_log_likelihood']:.3f} nats/image over {len(x)} test images "
          f"(IS, k={args.k}; independent-pixel baseline "
          f"{metrics['baseline_masked_log_likelihood']:.3f}); "
          f"wrote inpainting.png, metrics.json in {out}")
    return 0


# ----------------------------------------------------------------------------- register

def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vae train``, ``vae sample``, ``vae reconstruct`` and ``vae inpaint``."""
    from inference.cli import add_common, add_data_dir

    p = sub.add_parser("vae", help="variational autoencoder (AEVB): train, sample, "
                                   "reconstruct, inpaint",
                       description="The variational autoencoder of Kingma & Welling (2013) as "
                                   "Pyro and NumPyro model+guide pairs.")
    s = p.add_subparsers(dest="vae_command", metavar="COMMAND", required=True)

    t = s.add_parser("train", help="train a VAE by SVI; writes metrics, figures, checkpoint",
                     description="Train a (conditional) VAE with minibatch SVI. Writes "
                                 "metrics.json, checkpoint.npz (every epoch) and figures.")
    t.add_argument("--dataset", default="digits", choices=datasets.DATASETS,
                   help="dataset (default digits, embedded)")
    t.add_argument("--backend", default="numpyro", choices=BACKENDS)
    t.add_argument("--elbo", default="meanfield", choices=ELBOS,
                   help="trace: Trace_ELBO (estimator A); meanfield: TraceMeanField_ELBO "
                        "(estimator B, analytic KL; default)")
    t.add_argument("--latent", type=int, default=10, metavar="K", help="latent size (10)")
    t.add_argument("--hidden", default="200", metavar="H[,H]",
                   help="hidden widths, comma-separated (default 200)")
    t.add_argument("--activation", default="tanh", choices=ACTIVATIONS)
    t.add_argument("--decoder", default="auto", choices=("auto", "bernoulli", "gaussian"),
                   help="auto: gaussian for frey-face, else bernoulli")
    t.add_argument("--min-scale", type=float, default=0.01,
                   help="Gaussian decoder: lower bound on σ (default 0.01)")
    t.add_argument("--binarize", default="auto", choices=BINARIZE,
                   help="auto: dynamic for a Bernoulli decoder on grey data, else none")
    t.add_argument("--conditional", default="none", choices=CONDITIONS,
                   help="condition on the class label or on the visible part of the image")
    t.add_argument("--mask", default="lower", choices=MASKS,
                   help="hidden half for --conditional observed (default lower)")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the data (default {DEFAULT_EPOCHS_OTHER}; "
                        + ", ".join(f"{v} for {k}" for k, v in DEFAULT_EPOCHS.items()) + ")")
    t.add_argument("--batch-size", type=int, default=100, metavar="M")
    t.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--particles", type=int, default=1, metavar="L")
    t.add_argument("--weight-decay", type=float, default=0.0, metavar="LAMBDA",
                   help="precision λ of an N(0, λ⁻¹I) prior on the decoder weights (MAP); "
                        "1 is the paper's N(0, I); 0 (default) is none")
    t.add_argument("--bayesian", action="store_true",
                   help="fully Bayesian decoder (AEVB appendix F): a prior N(0, s²) and a "
                        "mean-field Gaussian q(θ) over every decoder weight")
    t.add_argument("--prior-scale", type=float, default=1.0, metavar="S",
                   help="--bayesian: prior scale s of the decoder weights (default 1)")
    t.add_argument("--init-sigma", type=float, default=1e-3,
                   help="--bayesian: initial σ of q(θ) (default 1e-3)")
    t.add_argument("--init-std", type=float, default=0.0,
                   help="initial weights ~ N(0, s²) (the paper: 0.01); 0: fan-in uniform")
    t.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="pyro: torch intra-op threads (default: torch's choice). Use 1 on a "
                        "busy machine: with more threads than free cores torch steps can be "
                        "tens of times slower")
    t.add_argument("--no-jit", action="store_true",
                   help="pyro: do not compile the ELBO with TorchScript (slower; for models "
                        "with dynamic structure)")
    t.add_argument("--n-train", type=int, default=None, help="use the first N training images")
    t.add_argument("--n-test", type=int, default=None, help="use the first N test images")
    t.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the first epoch that ends past this wall-clock budget; "
                        "the outputs describe the epochs done and --resume can continue")
    t.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (same options) up to --epochs")
    add_common(t)
    add_data_dir(t, download=True)
    t.set_defaults(func=_train)

    for name, func, help_ in (
            ("sample", _sample, "decode samples from the prior of a trained run"),
            ("reconstruct", _reconstruct, "reconstruct test images; re-evaluate the test ELBO"),
            ("inpaint", _inpaint, "fill the hidden half of test images (--conditional "
                                  "observed runs); masked-pixel log-likelihood")):
        q = s.add_parser(name, help=help_, description=help_)
        q.add_argument("run_dir", metavar="RUN_DIR", help="the --out of 'varbayes vae train'")
        q.add_argument("--n", type=int, default=64 if name == "sample" else 16,
                       help="images to show")
        if name == "inpaint":
            q.add_argument("--k", type=int, default=500, help="importance samples per image")
            q.add_argument("--n-eval", type=int, default=1000,
                           help="test images scored (default 1000)")
        add_common(q)
        add_data_dir(q)
        q.set_defaults(func=func)
