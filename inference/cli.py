"""The ``varbayes`` command: argument parsing and dispatch.

Each command group lives in its own module under :mod:`inference.commands` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` to a handler
``handler(args) -> int``. Handlers raise :class:`~inference.errors.VarbayesError` for bad
input; :func:`main` turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from inference.errors import VarbayesError
from inference.io import set_quiet

#: Command modules, in the order their commands appear in ``varbayes --help``.
COMMAND_MODULES = (
    "inference.commands.demo",
    "inference.commands.data",
    "inference.commands.ising",
    "inference.commands.vae",
    "inference.commands.evidence",
    "inference.commands.mcmc",
    "inference.commands.compare",
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``varbayes CMD: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_common(parser: argparse.ArgumentParser, *, out: bool = True, seed: bool = True) -> None:
    """Add the options every computing command shares: ``--out``, ``--seed``, ``--quiet``."""
    if out:
        parser.add_argument("--out", required=True, metavar="DIR",
                            help="folder for metrics.json and PNG figures (created if missing)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data_dir(parser: argparse.ArgumentParser, *, download: bool = False) -> None:
    """Add ``--data-dir`` (falls back to $VARBAYES_DATA, then ~/.cache/varbayes).

    With ``download=True`` also add ``--download`` (fetch missing files from the canonical
    source, verified, before loading): pass ``args.download`` to ``datasets.load``.
    """
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="data folder with one subfolder per dataset "
                             "(default: $VARBAYES_DATA, else ~/.cache/varbayes)")
    if download:
        parser.add_argument("--download", action="store_true",
                            help="fetch missing dataset files from their canonical source "
                                 "(verified before use)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``varbayes`` parser with every registered command."""
    parser = Parser(
        prog="varbayes",
        description="Variational inference done right: Ising, VAE and Bayesian VAE as Pyro "
                    "and NumPyro model+guide pairs, checked against exact answers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``varbayes`` console script; returns the exit status."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # arviz 0.23 announces its coming 1.0 refactor on import; not news for our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except VarbayesError as e:
        print(f"varbayes {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("varbayes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
