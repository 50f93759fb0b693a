"""``varbayes reproduce``: the seed paper's own experiments, one command each."""

from __future__ import annotations

import argparse

from varbayes.inference.commands._options import add_common, add_data_dir
from varbayes.inference.io import out_dir, write_metrics
from varbayes.inference.vae import reproduce
from varbayes.models.errors import VarbayesError

EXPERIMENTS = ("aevb-fig2",)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VarbayesError(f"{flag} must be comma-separated integers like 3,20, got "
                            f"{text!r}") from None
    if not values:
        raise VarbayesError(f"{flag} must name at least one value, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _reproduce(args: argparse.Namespace) -> int:
    if args.budget <= 0:
        raise VarbayesError(f"--budget must be > 0 seconds, got {args.budget}")
    if not args.lr > 0:
        raise VarbayesError(f"--lr must be > 0, got {args.lr}")
    datasets = _names(args.datasets)
    latents = _ints(args.latents, "--latents")
    reproduce.fig2_runs(datasets, latents)  # every check before any work
    out = out_dir(args.out)
    metrics = reproduce.fig2(out, args.budget, datasets, latents, seed=args.seed,
                             data_dir=args.data_dir, lr=args.lr)
    write_metrics(out, {"experiment": args.experiment, **metrics})
    print(f"varbayes reproduce {args.experiment}: {metrics['budget_seconds']:.0f} s, "
          f"{metrics['seconds_per_curve']:.0f} s per curve")
    print(f"  wrote {out}/metrics.json, aevb_fig2.png, report.md and runs/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes reproduce``."""
    p = sub.add_parser("reproduce", help="the seed paper's experiments (AEVB figure 2)",
                       description="Reproduce an experiment of the AEVB paper. aevb-fig2: the "
                                   "lower bound against training samples evaluated, AEVB "
                                   "against wake-sleep, one panel per dataset and latent "
                                   "size. Writes metrics.json, aevb_fig2.png, report.md and "
                                   "the run folders under runs/.")
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--budget", type=float, default=3600.0, metavar="SECONDS",
                   help="wall-clock budget for all curves together (default 3600)")
    p.add_argument("--datasets", default="mnist,frey-face",
                   help="comma-separated, from mnist, frey-face, digits (default "
                        "mnist,frey-face)")
    p.add_argument("--latents", default=None, metavar="K[,K]",
                   help="latent sizes N_z for every dataset (default: 3,20 for MNIST and "
                        "digits, 2,20 for Frey Face; the paper's are 3,5,10,20,200 and "
                        "2,5,10,20)")
    p.add_argument("--lr", type=float, default=0.02, help="Adagrad step size (default 0.02)")
    add_data_dir(p)
    add_common(p)
    p.set_defaults(func=_reproduce)
