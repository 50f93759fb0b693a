"""The datapoints of evidence batches split over JAX devices (NumPyro) or torch ranks (Pyro).

Every estimator of this package works per datapoint, so a batch splits along its datapoints:

* **JAX devices** (``devices`` N > 1, NumPyro runs): :func:`place` puts a batch's
  per-datapoint arrays on a ``sharding.mesh(N)`` (``shard_rows``) and every other array
  (networks, parameters) on all N devices (``replicate``); the estimator's jitted function
  runs on them unchanged and XLA partitions it. JAX's threefry is partitionable
  (``jax_threefry_partitionable``, the default since JAX 0.5): the draws, hence the
  per-datapoint results, are those of one device (up to the order of float sums).
* **torch ranks** (a ``torchrun`` process group, Pyro runs): each rank takes a contiguous
  block of every batch (:func:`local_batch`) and the per-datapoint results are gathered back
  in the original order (:func:`gather_points`). Each rank seeds its own draws
  (:func:`rank_seed`), so results match a one-process run statistically, not draw by draw.

The per-datapoint arrays of a batch ``(args, kwargs)`` are its direct arguments that are
arrays (``args`` items, ``kwargs`` values), as :func:`.batches.batches` lays a batch out after
its static objects; arrays inside other objects (a network, a NamedTuple of parameters) are
never split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from varbayes.inference import ranks, sharding
from varbayes.inference.evidence.batches import Batch
from varbayes.models.errors import check


def resolve_devices(devices: int, jax: bool, plate: str | None) -> int:
    """``devices``, checked: an integer >= 1; more than 1 needs a NumPyro pair (``jax``) with
    a data plate and that many JAX devices (one-line refusals otherwise)."""
    check(isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1,
          f"devices must be an integer >= 1, got {devices!r}")
    if devices == 1:
        return 1
    check(jax, f"devices={devices} splits a NumPyro (JAX) run over devices: use "
               f"--nproc {devices} (torch.distributed) for a Pyro run")
    check(plate is not None, "plate=None makes the whole data set one datapoint: it cannot "
                             "be split over devices")
    return sharding.check_devices(devices)


# ------------------------------------------------------------------ the datapoints of a batch

def _is_rows(a: Any) -> bool:
    shape = getattr(a, "shape", None)
    return shape is not None and len(shape) >= 1


def batch_rows(batch: Batch) -> int:
    """M, the datapoints of ``batch``: the common leading length of its direct array
    arguments (one-line refusal when they disagree or there is none)."""
    args, kwargs = batch
    sizes = {int(a.shape[0]) for a in (*args, *kwargs.values()) if _is_rows(a)}
    check(len(sizes) == 1, "a batch split over devices or ranks needs its per-datapoint "
                           "arrays as direct arguments of one length M, got lengths "
                           f"{sorted(sizes)}")
    return sizes.pop()


def _map_batch(batch: Batch, rows: Any, other: Any) -> Batch:
    """``batch`` with ``rows(a)`` for each per-datapoint argument and ``other(a)`` for the
    rest."""
    m = batch_rows(batch)

    def one(a: Any) -> Any:
        return rows(a) if _is_rows(a) and a.shape[0] == m else other(a)

    args, kwargs = batch
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


# ------------------------------------------------------------------------ JAX devices

def data_mesh(batches: Sequence[Batch], devices: int) -> Any | None:
    """The ``sharding.mesh(devices)`` that :func:`place` splits ``batches`` over (None for
    one device). Every batch but the last must divide by ``devices`` (one-line refusal: the
    batch size is the user's choice); the last may be the short rest of a data set."""
    if devices == 1:
        return None
    for batch in batches[:-1]:
        sharding.check_divides(batch_rows(batch), devices, "the batch size")
    return sharding.mesh(devices)


def place(batch: Batch, mesh: Any | None, *rows: Any) -> tuple[Batch, tuple[Any, ...]]:
    """``batch`` and the extra per-datapoint arrays ``rows`` (each (M, ...), or None) split
    along the datapoints over ``mesh``, everything else replicated on it.

    Unchanged when ``mesh`` is None or M does not divide by its size: the short last batch
    of a data set runs on one device as it is. (Padding it to a multiple of the mesh would
    save a compile, but it would need a padding row that suits any model, and the AIS
    acceptance averaged over a batch would count the padding.)
    """
    if mesh is None or batch_rows(batch) % mesh.size:
        return batch, rows
    import equinox as eqx

    def shard(a: Any) -> Any:
        return sharding.shard_rows([a], mesh)[0]

    def replicate(a: Any) -> Any:
        arrays, rest = eqx.partition(a, eqx.is_array)
        return eqx.combine(sharding.replicate(arrays, mesh), rest)

    return _map_batch(batch, shard, replicate), sharding.shard_rows(rows, mesh)


# ------------------------------------------------------------------------ torch ranks

def split_ranks(plate: str | None) -> bool:
    """True when a Pyro estimator should split its datapoints over the torch ranks: in a
    joined process group of more than one (NumPyro pairs run whole on every rank)."""
    if not ranks.active():
        return False
    check(plate is not None, "plate=None makes the whole data set one datapoint: it cannot "
                             "be split over torch ranks")
    return True


def block_sizes(m: int, world: int) -> list[int]:
    """Rows of each of ``world`` contiguous blocks of ``m`` rows (the first ``m % world``
    one larger)."""
    return [m // world + (r < m % world) for r in range(world)]


def rank_block(m: int) -> slice:
    """This rank's contiguous block of a batch of ``m`` rows."""
    sizes = block_sizes(m, ranks.world())
    lo = sum(sizes[: ranks.rank()])
    return slice(lo, lo + sizes[ranks.rank()])


def local_batch(batch: Batch) -> Batch:
    """This rank's block of the datapoints of ``batch`` (possibly empty)."""
    block = rank_block(batch_rows(batch))
    return _map_batch(batch, lambda a: a[block], lambda a: a)


def rank_seed(seed: int) -> int:
    """This rank's seed: ``seed`` itself outside a distributed run, else one mixed from
    ``(seed, rank)`` (each rank draws its own stream)."""
    if ranks.world() == 1:
        return seed
    return int(np.random.SeedSequence([seed, ranks.rank()]).generate_state(1)[0])


def gather_points(local: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Every rank's per-datapoint rows in the original order.

    ``local`` (n, ...) holds this rank's blocks of the batches of ``sizes`` (M_b each) one
    after the other; the result is (Σ M_b, ...) on every rank, ``local`` itself when alone.
    """
    world = ranks.world()
    if world == 1:
        return local
    import torch

    counts = np.array([block_sizes(m, world) for m in sizes], dtype=np.int64).T  # (W, B)
    totals = counts.sum(1)
    check(len(local) == totals[ranks.rank()], f"rank {ranks.rank()} has {len(local)} rows, "
                                              f"expected {totals[ranks.rank()]}")
    full = ranks.gather_rows(torch.as_tensor(np.ascontiguousarray(local)),
                             [int(t) for t in totals]).numpy()
    # full: rank 0's blocks of batches 0..B-1, then rank 1's, ...; reorder batch by batch
    starts = np.concatenate([[0], np.cumsum(totals)])[:-1, None] + np.concatenate(
        [np.zeros((world, 1), np.int64), np.cumsum(counts, 1)[:, :-1]], 1)  # (W, B)
    order = [np.arange(starts[r, b], starts[r, b] + counts[r, b])
             for b in range(len(sizes)) for r in range(world)]
    return full[np.concatenate(order)]

