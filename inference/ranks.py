"""The processes of a distributed run: who am I, who writes, and reductions over all.

Two kinds of run have several processes:

- ``torch.distributed`` (``torchrun``, or ``varbayes ... --nproc N``): a process finds
  ``RANK``, ``WORLD_SIZE`` and the rendezvous in its environment; :func:`init_from_env`
  joins the process group (gloo on CPU, NCCL when CUDA is used).
- ``jax.distributed`` (several hosts, each with its own devices, one JAX program):
  :func:`init_jax_from_env` starts it from ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

Outside such runs every function here answers for one process: rank 0 of 1, and the
reductions return their input. Only the main process (rank 0, JAX process 0) writes files.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from varbayes.models.errors import VarbayesError


def launched() -> bool:
    """True in a process that ``torchrun`` started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def stop_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (the launcher) dies, so that a launcher
    killed with SIGKILL leaves no rank running (a rank stops after its current step, its
    checkpoint intact). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def init_from_env(device: str = "cpu") -> None:
    """Join the process group that ``torchrun`` set up (a no-op when not launched or already
    joined); ``device="cuda"`` uses NCCL and this rank's ``LOCAL_RANK`` GPU."""
    if not launched():
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device == "cuda":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VarbayesError(f"cannot join the torch.distributed process group "
                            f"(MASTER_ADDR={os.environ.get('MASTER_ADDR')}, MASTER_PORT="
                            f"{os.environ.get('MASTER_PORT')}): {first}") from None


def active() -> bool:
    """True when a torch.distributed process group of more than one process is joined."""
    if not launched():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of processes (1 outside a distributed run)."""
    if not active():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    """This process's rank (0 outside a distributed run; torchrun's ``RANK`` before the
    process group is joined)."""
    if not active():
        return int(os.environ.get("RANK", "0")) if launched() else 0
    import torch.distributed as dist

    return dist.get_rank()


def jax_processes() -> tuple[int, int]:
    """(this process's index, the number of processes) of ``jax.distributed``; (0, 1) when
    it was not started."""
    if "jax" not in sys.modules:
        return 0, 1
    import jax

    if not jax.distributed.is_initialized():
        return 0, 1
    return jax.process_index(), jax.process_count()


def init_jax_from_env() -> bool:
    """Start ``jax.distributed`` when ``JAX_COORDINATOR_ADDRESS`` is set (with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or what JAX detects on a cluster); return
    whether it runs. Call before any other JAX work."""
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    try:
        jax.distributed.initialize(num_processes=None if count is None else int(count),
                                   process_id=None if index is None else int(index))
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VarbayesError(f"cannot start jax.distributed (JAX_COORDINATOR_ADDRESS="
                            f"{os.environ['JAX_COORDINATOR_ADDRESS']}, JAX_NUM_PROCESSES="
                            f"{count}, JAX_PROCESS_ID={index}): {first}") from None
    return True


def is_main() -> bool:
    """True in the one process that writes files and prints: torch rank 0 and JAX process 0
    (every process outside a distributed run)."""
    return rank() == 0 and jax_processes()[0] == 0


def all_sum(t: Any) -> Any:
    """The element-wise sum of the tensor ``t`` over all ranks (``t`` itself when alone)."""
    if not active():
        return t
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_max(value: float) -> float:
    """The largest ``value`` over all ranks or JAX processes (e.g. a flag that any of them
    may raise)."""
    if jax_processes()[1] > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        return float(np.max(multihost_utils.process_allgather(np.float64(value))))
    if not active():
        return value
    import torch

    t = torch.tensor([float(value)], dtype=torch.float64)
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_rows(t: Any, counts: list[int]) -> Any:
    """Concatenate every rank's rows in rank order; ``counts[r]`` is rank r's row count."""
    if not active():
        return t
    import torch
    import torch.distributed as dist

    pad = max(counts)
    mine = torch.zeros((pad, *t.shape[1:]), dtype=t.dtype)
    mine[: len(t)] = t
    parts = [torch.empty_like(mine) for _ in counts]
    dist.all_gather(parts, mine)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def leave() -> None:
    """Leave the process group, if this process joined one (at the end of a command)."""
    if not launched():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # every rank at the same point first: gloo aborts a process (SIGABRT) whose peer
        # tears the group down while it still talks to it
        dist.barrier()
        dist.destroy_process_group()


def leave_and_exit(status: int) -> None:
    """End a rank: leave the process group, flush the output and exit with ``status``
    without the interpreter's teardown, where gloo's threads now and then abort the process
    (SIGABRT, "terminate called without an active exception": 1 to 2 runs in 10 of a
    two-rank Pyro job here, after all its work), which would fail a finished job."""
    try:
        leave()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
