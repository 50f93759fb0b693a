"""The ``varbayes`` command: argument parsing and dispatch.

Each command group lives in its own module under :mod:`varbayes.inference.commands` and
exposes ``register(subparsers)``, which adds its parser(s) and sets ``func`` to a handler
``handler(args) -> int``. Handlers raise :class:`~varbayes.models.errors.VarbayesError` for bad
input; :func:`main` turns that into one line on stderr and exit status 2, an ``OSError``
(a full disk, a read-only folder) into one line and exit status 1, and SIGINT / SIGTERM into
one line and exit status 130 / 143 (:mod:`varbayes.inference.signals`). Each command runs as
the one writer of its ``--out`` (:mod:`varbayes.inference.runlock`).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from varbayes import __version__
from varbayes.inference import ranks, runlock, signals
from varbayes.models.errors import VarbayesError


def command_modules() -> tuple[ModuleType, ...]:
    """Command modules, in the order their commands appear in ``varbayes --help``.

    Imported here, not at the top, so that the signal handlers are in place while they load
    (about a second: they bring in numpy, scipy and matplotlib).
    """
    from varbayes.inference.commands import (
        compare,
        data,
        demo,
        evidence,
        ising,
        mcmc,
        reproduce,
        vae,
    )

    return (demo, data, ising, vae, evidence, mcmc, compare, reproduce)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``varbayes CMD: error: ... (see --help)``.

    Every (sub)command's parser records its name (``vae train``) as ``args.command_path``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(command_path=self.prog.removeprefix("varbayes").strip())

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
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``varbayes`` console script; returns the exit status."""
    try:
        with signals.handled():
            status = _main(argv)
    except KeyboardInterrupt as e:  # while the parser was built, or after the last check
        status = _interrupted(e, "varbayes")
    if ranks.launched():
        ranks.leave_and_exit(status)
    return status


def _main(argv: Sequence[str] | None) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # arviz 0.23 announces its coming 1.0 refactor on import; not news for our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    from varbayes.inference.commands._options import check_common
    from varbayes.inference.io import set_quiet, set_verbose

    parser = build_parser()
    if argv is None and ranks.launched():  # a process of --nproc: the launcher's arguments
        from varbayes.inference.launch import launched_argv

        argv = launched_argv()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    set_verbose(getattr(args, "verbose", False))
    name = f"varbayes {args.command_path}"
    try:
        check_common(args)
        if getattr(args, "nproc", 1) > 1 and not ranks.launched():
            _check_nproc(args)
            from varbayes.inference.launch import launch

            return launch(sys.argv[1:] if argv is None else list(argv), args.nproc)
        if ranks.launched():
            _join(args)
        if hasattr(args, "devices") and ranks.init_jax_from_env() and not ranks.is_main():
            from varbayes.inference.io import set_quiet

            set_quiet(True)  # JAX process 0 prints and writes
        with runlock.writer(args.command_path, force=getattr(args, "force", False)):
            status = int(args.func(args) or 0)
        signals.check()  # a signal after the work's last check point still ends it
        return status
    except KeyboardInterrupt as e:
        return _interrupted(e, name)
    except (VarbayesError, OSError) as e:
        if signals.pending() is not None:  # the signal came first: it sets the status
            return _interrupted(signals.Interrupted(signals.pending()), name)
        if isinstance(e, VarbayesError):
            if ranks.is_main():  # the other ranks meet the same check: one line in all
                print(f"{name}: error: {e}", file=sys.stderr)
            return 2
        # a full disk, a read-only mount, a folder where a file goes ...
        code = errno.errorcode.get(e.errno or 0, "")
        where = f": {e.filename}" if e.filename else ""
        print(f"{name}: error: {e.strerror or e}{f' ({code})' if code else ''}{where}",
              file=sys.stderr)
        return 1


def _check_nproc(args: argparse.Namespace) -> None:
    """``--nproc`` is for Pyro runs."""
    if getattr(args, "backend", "pyro") != "pyro":
        raise VarbayesError(f"--nproc {args.nproc} is for the Pyro backend: a NumPyro run "
                            f"uses several devices with --devices {args.nproc}")


def _join(args: argparse.Namespace) -> None:
    """A process started by torchrun: join the process group; ranks other than 0 are
    quiet (rank 0 prints the progress and writes the files)."""
    from varbayes.inference.io import set_quiet

    if not hasattr(args, "nproc"):
        raise VarbayesError(f"varbayes {args.command_path} runs in one process: start it "
                            "without torchrun")
    if getattr(args, "backend", "pyro") != "pyro":
        raise VarbayesError("torchrun started this NumPyro run: NumPyro runs in one process "
                            "and uses several devices with --devices N; torchrun and --nproc "
                            "are for the Pyro backend")
    if os.environ.get("VARBAYES_LAUNCH_ARGV") is not None:  # our --nproc launcher's child
        ranks.stop_with_parent()
    ranks.init_from_env()
    if not ranks.is_main():
        set_quiet(True)


def _interrupted(e: KeyboardInterrupt, name: str) -> int:
    """One line for SIGINT / SIGTERM; the exit status 128 + the signal number."""
    signals.clear()  # acted on: the end of signals.handled() must not raise it again
    status = getattr(e, "status", 128 + signal.SIGINT)
    if ranks.is_main():
            print(f"{name}: {e or 'interrupted by SIGINT'}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
