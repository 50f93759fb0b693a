"""The ``varbayes`` command: argument parsing and dispatch.

Each command group lives in its own module under :mod:`varbayes.inference.commands` and
exposes ``register(subparsers)``, which adds its parser(s) and sets ``func`` to a handler
``handler(args) -> int``. Handlers raise :class:`~varbayes.models.errors.VarbayesError` for bad
input; :func:`main` turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Sequence

from varbayes import __version__
from varbayes.inference.commands import compare, data, demo, evidence, ising, mcmc, vae
from varbayes.inference.commands._options import check_common
from varbayes.inference.io import set_quiet, set_verbose
from varbayes.models.errors import VarbayesError

#: Command modules, in the order their commands appear in ``varbayes --help``.
COMMAND_MODULES = (demo, data, ising, vae, evidence, mcmc, compare)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``varbayes CMD: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``varbayes`` parser with every registered command."""
    parser = Parser(
        prog="varbayes",
        description="Variational inference done right: Ising, VAE and Bayesian VAE as Pyro "
                    "and NumPyro model+guide pairs, checked against exact answers.",
    )
    parser.add_argument("--version", action="version", version=f"varbayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``varbayes`` console script; returns the exit status."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # arviz 0.23 announces its coming 1.0 refactor on import; not news for our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    set_verbose(getattr(args, "verbose", False))
    try:
        check_common(args)
        return int(args.func(args) or 0)
    except VarbayesError as e:
        print(f"varbayes {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("varbayes: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a read-only mount, a folder where a file goes ...
        code = errno.errorcode.get(e.errno or 0, "")
        where = f": {e.filename}" if e.filename else ""
        print(f"varbayes {args.command}: error: {e.strerror or e}"
              f"{f' ({code})' if code else ''}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
