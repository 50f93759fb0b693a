"""Data-parallel Pyro SVI over ``torch.distributed`` ranks, with one process's answer.

Every rank holds the same params and sees the same global minibatch of M datapoints (the
order is a function of the seed and the epoch), takes its contiguous slice of m = M/R rows
and runs the model and guide on it with ``n_data=N``, so its data plate scales the local
terms by N/m = R·N/M. The average over the R ranks of these gradients is therefore the
gradient of the one-process objective (N/M)·Σ_M local + global, and the ranks average their
gradients (one all-reduce of one flat buffer per step) before the optimizer step.

The random draws are one process's too. Every rank seeds torch alike, draws the global sites
(outside the data plate) alike, and draws the noise of a reparameterized site inside the
data plate for all M rows, keeping its own m (:class:`RankDraws`): the same draws as one
process for any R. This covers the normal family (``Normal`` and what is built on it,
``MultivariateNormal``, ``LowRankMultivariateNormal``, ``LogNormal``, ``Independent``
wrappers, transformed normals), whose noise comes from ``_standard_normal``; a site drawn
any other way draws per rank (a warning names it), which keeps the gradient unbiased but
ties the result to R.
"""

from __future__ import annotations

import importlib
import signal
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from varbayes.inference import ranks, signals

#: The torch modules that call ``_standard_normal`` by their own name for it.
_NOISE_MODULES = ("torch.distributions.utils", "torch.distributions.normal",
                  "torch.distributions.multivariate_normal",
                  "torch.distributions.lowrank_multivariate_normal")


def _patch(draw: Callable[..., Any] | None) -> Callable[..., Any]:
    """Install ``draw`` as ``_standard_normal`` in every module of :data:`_NOISE_MODULES`
    (None: the original back); return the original."""
    modules = [importlib.import_module(name) for name in _NOISE_MODULES]
    original = getattr(modules[0], "_varbayes_original", modules[0]._standard_normal)
    for m in modules:
        m._standard_normal = original if draw is None else draw
    modules[0]._varbayes_original = original
    return original


def rank_draws(fn: Callable[..., Any], plate_size: int, local: int, rank: int, world: int,
               warn: bool = True) -> Callable[..., Any]:
    """``fn`` (a Pyro model or guide) drawing the noise of its data-plate sites as one
    process would: rows ``rank·local ..`` of a draw for all ``world·local`` rows.

    The data plate is the plate of full size ``plate_size`` subsampled to ``local``. The
    wide draw is armed when a site is processed and disarmed after it, so that a site whose
    value comes from elsewhere (the guide's, replayed into the model) draws nothing, as in
    one process. ``warn``: warn about a data-plate site that drew no normal noise.
    """
    from pyro.poutine.messenger import Messenger

    warned: set[str] = set()
    armed: dict[str, Any] = {}

    def draw(shape: Any, dtype: Any, device: Any) -> Any:
        original = armed["original"]
        shape = list(shape)
        axis = len(shape) + armed["offset"]
        if not 0 <= axis < len(shape) or shape[axis] != local:
            return original(shape, dtype=dtype, device=device)
        armed["hits"] += 1
        shape[axis] = local * world
        return original(shape, dtype=dtype, device=device).narrow(axis, rank * local, local)

    def disarm() -> None:
        if armed:
            _patch(None)
            armed.clear()

    class RankDraws(Messenger):
        def _pyro_sample(self, msg: dict) -> None:
            if msg["is_observed"] or msg["value"] is not None or msg["done"]:
                return
            frame = next((f for f in msg["cond_indep_stack"]
                          if f.full_size == plate_size and f.size == local), None)
            if frame is None:  # a global site: every rank draws the same
                return
            armed.update(offset=frame.dim - len(msg["fn"].event_shape), hits=0,
                         site=msg["name"], original=_patch(draw))

        def _pyro_post_sample(self, msg: dict) -> None:
            if armed.get("site") != msg["name"]:
                return
            if warn and armed["hits"] == 0 and msg["name"] not in warned:
                warned.add(msg["name"])
                warnings.warn(f"site {msg['name']!r} ({type(msg['fn']).__name__}) is not drawn "
                              "from a normal: each rank draws its own, so the result depends "
                              "on the number of ranks", stacklevel=2)
            disarm()

        def __exit__(self, *exc: Any) -> Any:
            disarm()  # also when the site raised
            return super().__exit__(*exc)

    return RankDraws()(fn)


def local_rows(batch: Sequence[Any], rank: int, world: int) -> tuple[Any, ...]:
    """This rank's contiguous slice of every per-datapoint array of the global batch."""
    out = []
    for a in batch:
        if a is None:
            out.append(None)
            continue
        m = len(a) // world
        out.append(a[rank * m:(rank + 1) * m])
    return tuple(out)


def average_gradients(params: Sequence[Any], loss: Any) -> float:
    """Average the params' gradients and ``loss`` over all ranks in one all-reduce, and
    share a pending SIGINT / SIGTERM so that every rank stops after the same step.

    Returns the averaged loss (the one-process loss, nats). A param without a gradient
    keeps none (the ranks run the same graph, so they agree on which these are).
    """
    import torch

    with_grad = [p for p in params if p.grad is not None]
    pending = signals.pending()
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad]
                     + [loss.detach().reshape(1).to(torch.float32),
                        torch.tensor([0.0 if pending is None else float(pending)])])
    ranks.all_sum(flat)
    world = ranks.world()
    start = 0
    for p in with_grad:
        n = p.numel()
        p.grad.copy_(flat[start:start + n].view_as(p.grad)).div_(world)
        start += n
    if flat[-1].item() > 0 and pending is None:  # another rank was told to stop
        signals.record(signal.SIGTERM)
    return flat[start].item() / world
