"""Command-line options that several commands share, and their one-line checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from varbayes.models.errors import VarbayesError, check


def add_common(parser: argparse.ArgumentParser, *, out: bool = True, seed: bool = True) -> None:
    """Add the options every computing command shares: ``--out`` (with ``--force``),
    ``--seed``, ``--quiet``, ``--verbose``."""
    if out:
        parser.add_argument("--out", required=True, metavar="DIR",
                            help="folder for metrics.json and PNG figures (created if missing)")
        parser.add_argument("--force", action="store_true",
                            help="write into --out even if it holds a training run or another "
                                 "command's outputs (they are overwritten)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--verbose", action="store_true",
                        help="also show other libraries' own progress bars (NumPyro's MCMC)")


def add_parallel(parser: argparse.ArgumentParser) -> None:
    """Add ``--devices`` (NumPyro: JAX devices) and ``--nproc`` (Pyro: torch.distributed
    processes, launched through ``torch.distributed.run``)."""
    parser.add_argument("--devices", type=int, default=1, metavar="N",
                        help="NumPyro: split every batch over the first N JAX devices "
                             "(default 1)")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="Pyro: run on N processes (torchrun, gloo on CPU / NCCL on GPU), "
                             "each with its share of every batch (default 1)")


#: Seeds are 32-bit unsigned integers in numpy, torch and JAX alike.
MAX_SEED = 2**32 - 1


def check_common(args: argparse.Namespace) -> None:
    """One-line errors for the options of :func:`add_common`, before any work."""
    seed = getattr(args, "seed", None)
    check(seed is None or 0 <= seed <= MAX_SEED,
          f"--seed must be in [0, {MAX_SEED}], got {seed}")
    for flag in ("devices", "nproc"):
        n = getattr(args, flag, 1)
        check(n >= 1, f"--{flag} must be >= 1, got {n}")
    out = getattr(args, "out", None)
    check(out is None or str(out).strip() != "",
          "--out must name a folder, got an empty string: pass --out DIR")
    if out is not None and getattr(args, "run_dir", None) is not None and not args.force:
        check_not_a_run(Path(out), [args.run_dir, *str(getattr(args, "variants", "")
                                                      or "").split(",")])


def check_not_a_run(out: Path, runs: list[str]) -> None:
    """Refuse an ``--out`` that is one of the ``runs`` read, or any training run folder (it
    holds ``checkpoint.npz``): its metrics.json and figures would be overwritten."""
    target = out.resolve()
    for run in (r for r in runs if r.strip()):
        check(target != Path(run).resolve(),
              f"--out {out} is the run folder {run} that this command reads: its "
              "metrics.json and figures would be overwritten; pass another --out (or --force)")
    check(not (target / "checkpoint.npz").exists(),
          f"--out {out} holds a training run (checkpoint.npz): its metrics.json and figures "
          "would be overwritten; pass another --out (or --force)")


def add_data_dir(parser: argparse.ArgumentParser, *, download: bool = False) -> None:
    """Add ``--data-dir`` (falls back to $VARBAYES_DATA, then ~/.cache/varbayes).

    With ``download=True`` also add ``--download`` (fetch missing files from the canonical
    source, verified, before loading).
    """
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="data folder with one subfolder per dataset "
                             "(default: $VARBAYES_DATA, else ~/.cache/varbayes)")
    if download:
        parser.add_argument("--download", action="store_true",
                            help="fetch missing dataset files from their canonical source "
                                 "(verified before use)")


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """Add the positional ``RUN_DIR``: the ``--out`` of ``varbayes vae train`` (writing into
    it needs ``--force``, see :func:`check_not_a_run`)."""
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the --out folder of 'varbayes vae train'")


def add_nuts_options(p: argparse.ArgumentParser, *, n_data: int, chains: int, warmup: int,
                     samples: int) -> None:
    """``--n-data --chains --warmup --samples`` with these defaults (mcmc and compare)."""
    p.add_argument("--n-data", type=int, default=n_data,
                   help=f"test images (latent target; default {n_data})")
    p.add_argument("--chains", type=int, default=chains, help=f"chains (default {chains})")
    p.add_argument("--warmup", type=int, default=warmup, help="warmup steps per chain")
    p.add_argument("--samples", type=int, default=samples, help="kept draws per chain")


def check_nuts_options(args: argparse.Namespace) -> None:
    """One-line errors for the options of :func:`add_nuts_options`."""
    check(args.samples >= 1, f"--samples must be >= 1, got {args.samples}")
    check(args.warmup >= 1, f"--warmup must be >= 1, got {args.warmup}: NUTS adapts its step "
                            "size and mass matrix in warm-up, and the gate and KL computed "
                            "from unadapted draws mean nothing")
    check(args.chains >= 1, f"--chains must be >= 1, got {args.chains}")
    check(args.n_data >= 1, f"--n-data must be >= 1, got {args.n_data}")


def numbers(text: str, flag: str, kind: type = float) -> list:
    """Comma-separated numbers of ``kind`` (``int`` or ``float``), or a one-line error."""
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what, example = ("integers", "1,2,5") if kind is int else ("numbers", "0,0.5,1")
        raise VarbayesError(f"{flag} must be comma-separated {what} like {example}, got "
                            f"{text!r}") from None
