"""``varbayes demo``: the tour of the collection on embedded data.

Each part is a function ``part(out: Path, seed: int, quick: bool) -> dict`` that writes its
figures under ``out`` and returns flat metrics, prefixed by the part's name in
``metrics.json``. Model issues add their part to :data:`PARTS`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference import datasets
from inference.commands.evidence import demo_part as evidence_demo_part
from inference.commands.ising import demo_part as ising_demo_part
from inference.commands.vae import demo_part as vae_demo_part
from inference.errors import VarbayesError
from inference.io import out_dir, progress, save_figure, write_metrics


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


#: The demo's parts, in the order they run.
PARTS: dict[str, Callable[[Path, int, bool], dict[str, float]]] = {
    "data": data_part, "ising": ising_demo_part, "vae": vae_demo_part,
    "evidence": evidence_demo_part}


def run_demo(out: Path, seed: int = 0, quick: bool = False) -> dict[str, float]:
    """Run every part, write ``metrics.json`` and return the metrics."""
    metrics: dict[str, float] = {}
    for name in progress(list(PARTS), desc="demo"):
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
    from inference.cli import add_common

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
