"""``varbayes vae train | sample | reconstruct | inpaint``: the AEVB variational autoencoder.

``train`` writes a run folder (:mod:`varbayes.inference.vae.run`: ``checkpoint.npz``,
``metrics.json`` and the figures) through :func:`varbayes.inference.vae.train.train_run`.
The other subcommands read only the checkpoint, so they work on any finished or interrupted
run.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from varbayes.inference import ranks
from varbayes.inference.backends import BACKENDS
from varbayes.inference.commands._limits import (
    available_memory,
    check_fits,
    format_bytes,
    round_down,
)
from varbayes.inference.commands._options import (
    add_common,
    add_data_dir,
    add_parallel,
    add_run_dir,
)
from varbayes.inference.data.datasets import DATASETS
from varbayes.inference.io import out_dir, save_figure, write_metrics
from varbayes.inference.vae import figures
from varbayes.inference.vae.run import BINARIZE, CHECKPOINT, arrays_for, load_run, read_header
from varbayes.inference.vae.train import (
    DEFAULT_EPOCHS,
    DEFAULT_EPOCHS_OTHER,
    TrainSpec,
    check_spec,
    train_elbo,
    train_run,
)
from varbayes.inference.vi.svi import (
    COMPILERS,
    ELBOS,
    INDUCTOR_MIN_STEPS,
    IS_POINTS,
    OBJECTIVES,
    OPTIMIZERS,
)
from varbayes.models.errors import VarbayesError, check
from varbayes.models.vae import plots
from varbayes.models.vae.config import (
    ACTIVATIONS,
    CONDITIONS,
    MASKS,
    condition_vector,
    hidden_mask,
)
from varbayes.models.vae.evaluate import (
    elbo_b,
    independent_pixel_log_likelihood,
    masked_log_likelihood,
)
from varbayes.models.vae2.config import VAE2Config


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VarbayesError(f"--hidden must be comma-separated widths like 400 or 200,200, "
                            f"got {text!r}") from None
    return sizes


#: Bytes ``vae sample`` holds per pixel of each sample: the decoded float32 image, its
#: clipped copy, the picture grid and matplotlib's float64 copies of it (75-95 measured).
SAMPLE_BYTES_PER_PIXEL = 64
#: Bytes ``vae inpaint`` holds per importance sample, image and pixel: the float32
#: per-pixel log-likelihoods and their hidden half (about 20 measured).
INPAINT_BYTES_PER_PIXEL = 16
#: Bytes per network weight in training: float32 weights, gradients and two Adam moments.
TRAIN_BYTES_PER_WEIGHT = 16


def check_network_fits(hidden: tuple[int, ...], latent: int) -> None:
    """Refuse ``--hidden``/``--latent`` whose weights cannot fit in memory, before any data is
    read: a lower bound that counts one pixel (the data's width is not known yet)."""
    if latent < 1 or not hidden or min(hidden) < 1:
        return  # refused with their own message later
    pairs = sum(a * b for a, b in itertools.pairwise(hidden))
    weights = 2 * pairs + 3 * latent * hidden[-1] + 2 * hidden[0]  # encoder and decoder
    avail = available_memory()
    if avail is None or weights * TRAIN_BYTES_PER_WEIGHT <= avail:
        return
    what = "the network's weights, gradients and Adam moments"
    widths = ",".join(map(str, hidden))
    if latent > max(hidden):  # the latent size is the outlier
        check_fits("--latent", latent, TRAIN_BYTES_PER_WEIGHT * 3 * hidden[-1], what,
                   fixed=TRAIN_BYTES_PER_WEIGHT * (weights - 3 * latent * hidden[-1]),
                   given=f"with --hidden {widths}")
    per_unit = TRAIN_BYTES_PER_WEIGHT * (3 * latent + 2)
    raise VarbayesError(
        f"--hidden {widths} needs {format_bytes(weights * TRAIN_BYTES_PER_WEIGHT)} for {what} "
        f"(with --latent {latent}), more than the {format_bytes(avail)} of memory available: "
        f"pass narrower --hidden widths (one layer of at most "
        f"{round_down(avail // per_unit)} units fits)")


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    """The :class:`TrainSpec` of ``vae train``'s arguments."""
    return TrainSpec(
        dataset=args.dataset, data_dir=args.data_dir, download=args.download,
        backend=args.backend, elbo=args.elbo, latent=args.latent, hidden=_hidden(args.hidden),
        activation=args.activation, decoder=args.decoder, min_scale=args.min_scale,
        binarize=args.binarize, conditional=args.conditional, mask=args.mask,
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        particles=args.particles, objective=args.objective, is_every=args.is_every,
        is_particles=args.is_particles, stochastic_layers=args.stochastic_layers,
        weight_decay=args.weight_decay, bayesian=args.bayesian,
        prior_scale=args.prior_scale, init_sigma=args.init_sigma, init_std=args.init_std,
        jit=not args.no_jit, compiler=args.compiler, n_train=args.n_train, n_test=args.n_test,
        time_limit=None if args.time_limit is None else 60 * args.time_limit,
        resume=args.resume, seed=args.seed, devices=args.devices)


def _train(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    check_spec(spec)
    check_network_fits(spec.hidden, spec.latent)
    if args.torch_threads is not None:
        check(args.torch_threads >= 1, f"--torch-threads must be >= 1, got {args.torch_threads}")
        import torch

        torch.set_num_threads(args.torch_threads)
    out = out_dir(args.out) if ranks.is_main() else Path(args.out)  # rank 0 writes
    r = train_run(spec, out)
    if not ranks.is_main():
        return 0
    m, config = r.metrics, r.config
    what = (f"{train_elbo(spec)} ELBO" if spec.objective == "elbo"
            else f"{spec.objective} K={spec.particles}")
    arch = f"{config.x_dim}-{'-'.join(map(str, config.hidden))}-{config.z_dim}"
    if spec.stochastic_layers == 2:
        c2 = VAE2Config(config.x_dim)
        arch = "-".join(map(str, (c2.x_dim, *c2.hidden[0], c2.z_dims[0], *c2.hidden[1],
                                  c2.z_dims[1])))
    print(f"varbayes vae train: {spec.dataset}, {spec.backend} {what}, {arch}, "
          f"{r.epochs} epochs ({r.start_epoch} resumed), "
          f"{m['seconds_per_epoch']:.3g} s/epoch")
    print(f"  test ELBO {m['test_elbo']:.3f} nats/datapoint (best "
          f"{m['best_test_elbo']:.3f}), train ELBO {m['train_elbo']:.3f}")
    if "test_is" in m:
        print(f"  test log p(x) ≥ {m['test_is']:.3f} nats/datapoint (IS, K={spec.is_particles}, "
              f"first {m['is_points']} test points, epoch {m['is_epoch']})")
    if spec.bayesian:
        print(f"  Bayesian decoder: KL(q(θ)‖p(θ)) = {m['kl_weights']:.1f} nats per pass "
              f"over the data ({m['kl_weights_per_datapoint']:.3f} per training point); "
              f"appendix-F bound {m['train_bound']:.3f} per training point")
    print(f"  wrote {out / 'metrics.json'}, {CHECKPOINT}, {', '.join(r.figures)}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    check(args.n >= 1, f"--n must be >= 1, got {args.n}")
    cfg = read_header(args.run_dir)["meta"]["vae"]
    if cfg.get("condition") != "observed":  # observed: at most the test images
        check_fits("--n", args.n, SAMPLE_BYTES_PER_PIXEL * int(cfg["x_dim"]),
                   "the decoded images and their picture grid")
    run = load_run(args.run_dir, args.data_dir)
    out = out_dir(args.out)
    names = figures.sample_figure(out, run.mod, run.vae, run.data, args.n, args.seed,
                                  figures.run_title(run))
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
    names = figures.reconstruction_figure(out, run.mod, run.vae, data, args.n,
                                          figures.run_title(run))
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
    x = data.x_test[: args.n_eval]
    check_fits("--k", args.k, INPAINT_BYTES_PER_PIXEL * len(x) * cfg.x_dim,
               "the per-pixel log-likelihoods of the importance samples",
               given=f"with {len(x)} test images of {cfg.x_dim} pixels, --n-eval {args.n_eval}")
    out = out_dir(args.out)
    hidden = hidden_mask(cfg)
    c = condition_vector(cfg, x)
    res = masked_log_likelihood(run.mod, run.vae, x, c, hidden, np.random.default_rng(args.seed),
                                k=args.k)
    base = independent_pixel_log_likelihood(cfg, data.x_train, x, hidden)
    n = min(args.n, len(x))
    masked = x[:n].copy()
    masked[:, hidden] = 0.5
    save_figure(plots.inpainting(x[:n], masked, res.filled[:n], res.samples[:, :n],
                                 data.image_shape,
                                 f"inpainting the {cfg.mask} half: {figures.run_title(run)}",
                                 invert=figures.ink(run.vae)),
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vae train``, ``vae sample``, ``vae reconstruct`` and ``vae inpaint``."""
    p = sub.add_parser("vae", help="variational autoencoder (AEVB): train, sample, "
                                   "reconstruct, inpaint",
                       description="The variational autoencoder of Kingma & Welling (2013) as "
                                   "Pyro and NumPyro model+guide pairs.")
    s = p.add_subparsers(dest="vae_command", metavar="COMMAND", required=True)

    t = s.add_parser("train", help="train a VAE by SVI; writes metrics, figures, checkpoint",
                     description="Train a (conditional) VAE with minibatch SVI. Writes "
                                 "metrics.json, checkpoint.npz (every epoch) and figures.")
    t.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="dataset (default digits, embedded)")
    t.add_argument("--backend", default="numpyro", choices=BACKENDS)
    t.add_argument("--elbo", default=None, choices=ELBOS,
                   help="trace: Trace_ELBO (estimator A); meanfield: TraceMeanField_ELBO "
                        "(estimator B, analytic KL; default for one stochastic layer, trace "
                        "for two)")
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
    t.add_argument("--objective", default="elbo", choices=OBJECTIVES,
                   help="elbo (the --elbo estimator; default), iwae (the K-sample "
                        "importance-weighted bound), dreg (the same bound, "
                        "doubly-reparameterized gradient), wake-sleep (wake phase for the "
                        "decoder, sleep phase for the encoder) or rws (reweighted wake-sleep, "
                        "K >= 2); K is --particles")
    t.add_argument("--particles", type=int, default=1, metavar="K",
                   help="samples per datapoint and step: L of the ELBO, K of iwae, dreg, "
                        "wake-sleep and rws "
                        "(default 1)")
    t.add_argument("--stochastic-layers", type=int, default=1, choices=(1, 2),
                   help="2: the IWAE paper's VAE with two stochastic layers (z 100 and 50 "
                        "units; tanh layers 200,200 and 100,100; Bernoulli decoder) instead of "
                        "--latent and --hidden (default 1)")
    t.add_argument("--is-every", type=int, default=0, metavar="E",
                   help="every E epochs, an IS estimate of log p(x) on the first "
                        f"{IS_POINTS} train-eval and test points (default 0: never)")
    t.add_argument("--is-particles", type=int, default=100, metavar="K",
                   help="importance samples per point of that estimate (default 100)")
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
                   help="pyro: do not compile the ELBO (slower; for models with dynamic "
                        "structure)")
    t.add_argument("--compiler", choices=COMPILERS, default="auto",
                   help="pyro: torch.compile (inductor) or TorchScript for the ELBO; auto: "
                        f"inductor from {INDUCTOR_MIN_STEPS} steps on, where its compile time "
                        "(15-25 s) pays off (default auto)")
    t.add_argument("--n-train", type=int, default=None, help="use the first N training images")
    t.add_argument("--n-test", type=int, default=None, help="use the first N test images")
    t.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the first epoch that ends past this wall-clock budget; "
                        "the outputs describe the epochs done and --resume can continue")
    t.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (same options) up to --epochs")
    add_parallel(t)
    add_common(t)
    add_data_dir(t, download=True)
    t.set_defaults(func=_train)

    for name, func, help_ in (
            ("sample", _sample, "decode samples from the prior of a trained run"),
            ("reconstruct", _reconstruct, "reconstruct test images; re-evaluate the test ELBO"),
            ("inpaint", _inpaint, "fill the hidden half of test images (--conditional "
                                  "observed runs); masked-pixel log-likelihood")):
        q = s.add_parser(name, help=help_, description=help_)
        add_run_dir(q)
        q.add_argument("--n", type=int, default=64 if name == "sample" else 16,
                       help="images to show")
        if name == "inpaint":
            q.add_argument("--k", type=int, default=500, help="importance samples per image")
            q.add_argument("--n-eval", type=int, default=1000,
                           help="test images scored (default 1000)")
        add_common(q)
        add_data_dir(q)
        q.set_defaults(func=func)
