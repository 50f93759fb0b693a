"""``varbayes demo``: the tour of the collection on embedded data.

Each part is a function ``part(out: Path, seed: int, quick: bool) -> dict`` that calls the
library, writes its figures under ``out`` and returns flat metrics, prefixed by the part's
name in ``metrics.json``. A new model adds its part to :data:`PARTS`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from varbayes.inference.commands._options import add_common
from varbayes.inference.data import datasets
from varbayes.inference.io import out_dir, quiet, save_figure, write_metrics
from varbayes.inference.ising.denoise import Options, run_method
from varbayes.inference.vae.bayes_evidence import write_evidence
from varbayes.inference.vae.run import CHECKPOINT, load_run
from varbayes.inference.vae.train import TrainSpec, train_run
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import plots as ising_plots
from varbayes.models.ising.noise import Noise, corrupt, pixel_error, threshold


def data_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """A look at the embedded data: digits samples and the binary test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = datasets.load("digits")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d.x_train), size=8, replace=False)
    images = {s: datasets.load_binary_image(s) for s in ("shapes", "digits:0", "digits:4")}
    try:
        images["letterA"] = datasets.load_binary_image("letterA")
    except VarbayesError:  # not in the data dir: the demo needs no files
        images["digits:7"] = datasets.load_binary_image("digits:7")
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
    for ax, i in zip(axes[0, :8].ravel(), idx, strict=True):
        ax.imshow(d.x_train[i].reshape(d.image_shape), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(int(d.y_train[i]), fontsize=8)
    for ax, i in zip(axes[1, :8].ravel(), idx, strict=True):
        ax.imshow(datasets.dynamic_binarize(d.x_train[i], rng).reshape(d.image_shape),
                  cmap="gray_r", vmin=0, vmax=1)
    for ax, (name, img) in zip(axes[:, 8:].ravel(), images.items(), strict=True):
        ax.imshow(img, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("digits (top), the same dynamically binarized (bottom); "
                 "Ising test images, ±1 (right)", fontsize=9)
    save_figure(fig, out / "data.png")
    return {"digits_n_train": len(d.x_train), "digits_n_test": len(d.x_test),
            "digits_mean_intensity": float(d.x_train.mean())}


def ising_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """Ising denoising in Murphy's letterA setting (``shapes`` without the data folder).

    Thresholding, ICM, CAVI (checkerboard) and Gibbs at σ = 2, J = 1, plus exact inference
    against the mean-field bound on the 8×8 ``digits:3``.
    """
    try:
        name, clean = "letterA", datasets.load_binary_image("letterA")
    except VarbayesError:  # the demo needs no downloaded files
        name, clean = "shapes", datasets.load_binary_image("shapes")
    noise = Noise("gaussian", 2.0)
    x = corrupt(clean, noise, np.random.default_rng(seed))
    opts = Options(seed=seed, iters=50 if quick else None, burn_in=10 if quick else 50)
    runs = {m: run_method(m, x, noise, 1.0, opts) for m in ("icm", "cavi", "gibbs")}
    save_figure(ising_plots.panel(clean, x, runs["cavi"].mean, runs["cavi"].estimate,
                            f"mean field (checkerboard CAVI) on {name}, sigma=2, J=1"),
                out / "ising_cavi_panel.png")
    errors = {"threshold": pixel_error(threshold(x), clean)}
    errors.update({m: pixel_error(r.estimate, clean) for m, r in runs.items()})
    save_figure(ising_plots.comparison(clean, x, {"threshold": threshold(x)} | {
        m: r.estimate for m, r in runs.items()}, errors), out / "ising_compare.png")
    small = datasets.load_binary_image("digits:3")
    xs = corrupt(small, Noise("gaussian", 0.8), np.random.default_rng(seed))
    cavi_small = run_method("cavi", xs, Noise("gaussian", 0.8), 0.5)
    exact_small = run_method("exact", xs, Noise("gaussian", 0.8), 0.5)
    metrics = {f"{m}_pixel_error": e for m, e in errors.items()}
    metrics.update(cavi_elbo=runs["cavi"].elbo, digits3_elbo=cavi_small.elbo,
                   digits3_log_evidence=exact_small.log_evidence)
    return metrics


def vae_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """A 2-D latent VAE on the embedded digits (NumPyro, estimator B), always from scratch."""
    (out / CHECKPOINT).unlink(missing_ok=True)
    m = train_run(TrainSpec(dataset="digits", latent=2, epochs=20 if quick else 300,
                            seed=seed), out).metrics
    return {k: float(m[k]) for k in ("test_elbo", "best_test_elbo", "train_elbo", "epochs",
                                     "seconds_per_epoch")}


def evidence_part(out: Path, seed: int, quick: bool) -> dict[str, float]:
    """ELBO, IS and quadrature on the VAE of :func:`vae_part` (its run folder
    ``out/../vae``), as ``varbayes evidence --estimators elbo,is,quadrature``."""
    k, n = (200, 60) if quick else (2000, 360)
    _, m = write_evidence(load_run(out.parent / "vae"), out, ("elbo", "is", "quadrature"),
                          n_data=n, k=k, seed=seed)
    return {key: float(m[key]) for key in ("elbo", "is", "quadrature", "is_seconds",
                                           "quadrature_seconds", "n_data", "k")}


#: The demo's parts, in the order they run.
PARTS: dict[str, Callable[[Path, int, bool], dict[str, float]]] = {
    "data": data_part, "ising": ising_part, "vae": vae_part, "evidence": evidence_part}


def run_demo(out: Path, seed: int = 0, quick: bool = False) -> dict[str, float]:
    """Run every part, write ``metrics.json`` and return the metrics."""
    metrics: dict[str, float] = {}
    for i, name in enumerate(PARTS):  # one line per part; the parts show their own progress
        if not quiet():
            print(f"demo: part {i + 1}/{len(PARTS)}: {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        part_out = out_dir(out / name)
        for key, value in PARTS[name](part_out, seed, quick).items():
            metrics[f"{name}_{key}"] = value
        metrics[f"{name}_seconds"] = time.perf_counter() - t0
    write_metrics(out, metrics)
    return metrics


def _demo(args: argparse.Namespace) -> int:
    out = out_dir(args.out)
    metrics = run_demo(out, seed=args.seed, quick=args.quick)
    print(f"varbayes demo: {len(PARTS)} part(s) ran: {', '.join(PARTS)}")
    for key in sorted(metrics):
        print(f"  {key:<32} {metrics[key]:.6g}")
    figures = ", ".join(str(p) for p in sorted(out.glob("*/*.png")))
    print(f"report: {out / 'metrics.json'}; figures: {figures}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes demo``."""
    p = sub.add_parser("demo", help="tour of the collection on embedded data",
                       description="Runs the main job on embedded data (digits, synthetic and "
                                   "letterA images) and writes metrics.json and figures.")
    add_common(p)
    p.set_defaults(out="runs/demo")
    for action in p._actions:
        if action.dest == "out":
            action.required = False
            action.help = "folder for metrics.json and figures (default runs/demo)"
    p.add_argument("--quick", action="store_true", help="smallest settings (for tests)")
    p.set_defaults(func=_demo)
