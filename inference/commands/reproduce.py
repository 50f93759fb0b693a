"""``varbayes reproduce``: the seed paper's own experiments, one command each."""

from __future__ import annotations

import argparse

from varbayes.inference.commands._options import add_common, add_data_dir, numbers
from varbayes.inference.io import out_dir, write_metrics
from varbayes.inference.vae import reproduce, reproduce_fig3
from varbayes.models.errors import VarbayesError

EXPERIMENTS = ("aevb-fig2", "aevb-fig3")
#: --datasets when not given.
DEFAULT_DATASETS = {"aevb-fig2": "mnist,frey-face", "aevb-fig3": "mnist"}


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    values = tuple(numbers(text, flag, int))
    if not values:
        raise VarbayesError(f"{flag} must name at least one value, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _reproduce(args: argparse.Namespace) -> int:
    reproduce.check_budget(args.budget, args.lr)
    fig3 = args.experiment == "aevb-fig3"
    for flag, value in (("--train-sizes", args.train_sizes), ("--evals", args.evals),
                        ("--n-eval", args.n_eval)):
        if value is not None and not fig3:
            raise VarbayesError(f"{flag} is an option of aevb-fig3 only: drop it for "
                                f"{args.experiment}")
    datasets = _names(args.datasets or DEFAULT_DATASETS[args.experiment])
    latents = _ints(args.latents, "--latents")
    if fig3:
        o = reproduce_fig3.Fig3Options(
            budget=args.budget, datasets=datasets,
            train_sizes=_ints(args.train_sizes, "--train-sizes")
            or reproduce_fig3.PAPER_TRAIN_SIZES,
            latents=latents or (reproduce_fig3.PAPER_LATENT,),
            evals=5 if args.evals is None else args.evals,
            n_eval=args.n_eval, lr=args.lr, seed=args.seed, data_dir=args.data_dir)
        reproduce_fig3.plan(o)  # every check before any work
        out = out_dir(args.out)
        metrics = reproduce_fig3.fig3(out, o)
        figure = "aevb_fig3.png"
    else:
        reproduce.fig2_runs(datasets, latents)  # every check before any work
        out = out_dir(args.out)
        metrics = reproduce.fig2(out, args.budget, datasets, latents, seed=args.seed,
                                 data_dir=args.data_dir, lr=args.lr)
        figure = "aevb_fig2.png"
    write_metrics(out, {"experiment": args.experiment, **metrics})
    print(f"varbayes reproduce {args.experiment}: {metrics['budget_seconds']:.0f} s, "
          f"{metrics['seconds_per_curve']:.0f} s per curve")
    print(f"  wrote {out}/metrics.json, {figure}, report.md and runs/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes reproduce``."""
    p = sub.add_parser("reproduce", help="the seed paper's experiments (AEVB figures 2, 3)",
                       description="Reproduce an experiment of the AEVB paper. aevb-fig2: the "
                                   "lower bound against training samples evaluated, AEVB "
                                   "against wake-sleep, one panel per dataset and latent "
                                   "size. aevb-fig3: the marginal likelihood (appendix-D "
                                   "estimator) against training samples evaluated, AEVB "
                                   "against wake-sleep and Monte Carlo EM, one panel per "
                                   "training-set size. Writes metrics.json, the figure, "
                                   "report.md and the run folders under runs/.")
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--budget", type=float, default=3600.0, metavar="SECONDS",
                   help="wall-clock budget for all curves together (default 3600)")
    p.add_argument("--datasets", default=None,
                   help="comma-separated, from mnist, frey-face, digits (default: "
                        "mnist,frey-face for aevb-fig2, mnist for aevb-fig3, which takes no "
                        "frey-face)")
    p.add_argument("--latents", default=None, metavar="K[,K]",
                   help="latent sizes N_z for every dataset (aevb-fig2 default: 3,20 for "
                        "MNIST and digits, 2,20 for Frey Face; the paper's are 3,5,10,20,200 "
                        "and 2,5,10,20. aevb-fig3 default: 3, the paper's)")
    p.add_argument("--train-sizes", default=None, metavar="N[,N]",
                   help="aevb-fig3: training-set sizes, one panel each (default 1000,50000, "
                        "the paper's)")
    p.add_argument("--evals", type=int, default=None,
                   help="aevb-fig3: marginal-likelihood estimates per curve, evenly spaced "
                        "in log training time (default 5)")
    p.add_argument("--n-eval", type=int, default=None,
                   help="aevb-fig3: training and test points each estimate scores "
                        "(default 500, or the size of a smaller test or training set)")
    p.add_argument("--lr", type=float, default=0.02,
                   help="Adagrad step size of every method (default 0.02)")
    add_data_dir(p)
    add_common(p)
    p.set_defaults(func=_reproduce)
