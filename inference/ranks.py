"""The processes of a ``torch.distributed`` run (``torchrun``): who am I, and sums over all.

A process started by ``torchrun`` (or ``varbayes ... --nproc N``) finds ``RANK``,
``WORLD_SIZE`` and the rendezvous in its environment; :func:`init_from_env` joins the
process group (gloo on CPU, NCCL when CUDA is used). Outside such a run every function here
answers for one process: rank 0 of 1, and the reductions return their input.
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


def is_main() -> bool:
    """True on rank 0, the one process that writes files and prints."""
    return rank() == 0


def all_sum(t: Any) -> Any:
    """The element-wise sum of the tensor ``t`` over all ranks (``t`` itself when alone)."""
    if not active():
        return t
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_max(value: float) -> float:
    """The largest ``value`` over all ranks (e.g. a flag that any rank may raise)."""
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
        dist.destroy_process_group()
