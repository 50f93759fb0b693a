"""``--nproc N``: run the same command on N processes through ``torch.distributed.run``.

The launcher is PyTorch's own (``torchrun --standalone --nproc_per_node=N -m varbayes ...``);
each process finds its rank in its environment and joins the process group
(:mod:`varbayes.inference.ranks`). ``OMP_NUM_THREADS`` defaults to the cores divided by N,
so that the processes do not oversubscribe the machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from varbayes.inference import signals

#: The environment variable that carries the command's arguments to the processes.
ARGV = "VARBAYES_LAUNCH_ARGV"


def launched_argv() -> list[str] | None:
    """In a process that :func:`launch` started, the command's arguments; else None."""
    text = os.environ.get(ARGV)
    return None if text is None else [str(a) for a in json.loads(text)]


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``varbayes argv`` on ``nproc`` local processes; return the exit status (that of
    the first process that failed, else 0). The processes print their own lines."""
    import torch.distributed.run as run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The command's own arguments travel in the environment: torchrun's parser would take
    # some of them (--nproc, say) for abbreviations of its own options.
    os.environ[ARGV] = json.dumps(list(argv))
    config = run.parse_args(["--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
                             "--module", "varbayes"])
    # torchrun logs a process's failure (with its exit code) at ERROR level; the process
    # has printed its own line, so that log is left out (it stays with --verbose)
    from varbayes.inference.io import verbose

    if not verbose():
        for name in [*logging.root.manager.loggerDict, "torch.distributed"]:
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    with signals.unwatched():  # the launcher's own handlers stop the processes
        try:
            run.run(config)
        except ChildFailedError as e:
            codes = [f.exitcode for _, f in sorted(e.failures.items())]
            code = next((c for c in codes if c), 1)
            return code if code > 0 else 128 - code  # -15: killed by SIGTERM
        except SignalException as e:
            return 128 + int(e.sigval)
    return 0
