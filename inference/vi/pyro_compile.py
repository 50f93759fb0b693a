"""A Pyro ELBO's differentiable loss as one ``torch.compile`` (inductor) graph.

``torch.compile`` cannot follow Pyro's poutines (Dynamo breaks the graph at every message),
so the loss is captured the way ``JitTrace_ELBO`` captures it, and then compiled:

1. ``make_fx`` runs ``elbo.differentiable_loss(model, guide, *batch)`` once on the real
   tensors and records every aten op as a function of the param leaves and the batch (the
   param store's unconstrained tensors are the graph's first inputs; Pyro's ``.item()``
   calls are recorded as ``detach`` so that the reported value stays a graph output);
2. ``torch.compile`` (inductor, with ``fallback_random``: the noise comes from torch's global
   generator exactly as in eager mode) compiles forward and backward.

As for ``JitTrace_ELBO`` the model must have static structure: Python control flow that
depends on tensor values is fixed at the traced values. Each input signature (the shapes
and dtypes of the batch) gets its own graph. Before compiling, the captured graph is
run against the eager loss on fresh noise, and :class:`CompileError` is raised when they
differ (a cheap check, not a proof of static structure) or when compiling fails, so that
the caller can fall back to TorchScript.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from varbayes.models.errors import VarbayesError

#: Relative difference allowed between the compiled and the eager loss on the same noise.
CHECK_RTOL = 1e-4


class CompileError(VarbayesError):
    """The loss could not be compiled, or the compiled loss disagrees with the eager one."""


@contextlib.contextmanager
def _traceable_items() -> Iterator[None]:
    """Pyro's ELBOs turn parts of the loss into Python floats with ``torch_item``; during
    the trace they stay tensors (detached, so the gradient is unchanged), as under
    ``torch.jit.trace``."""
    import pyro.infer.trace_elbo as trace_elbo
    import pyro.infer.trace_mean_field_elbo as trace_mean_field_elbo
    import torch

    modules = (trace_elbo, trace_mean_field_elbo)
    saved = [m.torch_item for m in modules]

    def detached(x: Any) -> Any:
        return x.detach() if isinstance(x, torch.Tensor) else x

    for m in modules:
        m.torch_item = detached
    try:
        yield
    finally:
        for m, f in zip(modules, saved, strict=True):
            m.torch_item = f


def _drop_python_reads(graph: Any) -> None:
    """Remove the reads of tensor values into Python (``.item()`` in Pyro's NaN warnings)
    whose results the graph does not use: each would split the compiled graph in two."""
    import torch

    for node in list(graph.graph.nodes):
        if node.target is torch.ops.aten._local_scalar_dense.default and not node.users:
            graph.graph.erase_node(node)
    graph.recompile()


def _failed(e: Exception) -> CompileError:
    first = str(e).splitlines()[0] if str(e) else ""
    return CompileError(f"torch.compile of the Pyro loss failed: {type(e).__name__}: {first}")


def _signature(args: Sequence[Any]) -> tuple:
    import torch

    return tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else repr(a)
                 for a in args)


def compile_loss(elbo: Any, model: Callable[..., None], guide: Callable[..., None],
                 params: Sequence[Any]) -> Callable[..., Any]:
    """``loss(*batch) -> Tensor``, equal to ``elbo.differentiable_loss(model, guide, *batch)``
    (value and gradients), run as a compiled graph of ``params`` and the batch's tensors.

    ``params`` are the leaf tensors the loss depends on (every unconstrained param of the
    param store); they are the graph's inputs, so optimizer updates are seen. Non-tensor
    batch entries (e.g. None) are fixed per signature. Raises :class:`CompileError` on the
    first call for a signature if tracing or compiling fails or the captured graph differs
    from the eager loss.
    """
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    params = list(params)
    graphs: dict[tuple, Callable[..., Any]] = {}

    def eager(*args: Any) -> Any:
        return elbo.differentiable_loss(model, guide, *args)

    def build(args: tuple) -> Callable[..., Any]:
        where = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

        def flat(*inputs: Any) -> Any:
            full = list(args)
            for i, t in zip(where, inputs[len(params):], strict=True):
                full[i] = t
            return eager(*full)

        tensors = [args[i] for i in where]
        state = torch.get_rng_state()
        try:
            with _traceable_items():
                graph = make_fx(flat, tracing_mode="real",
                                _error_on_data_dependent_ops=False)(*params, *tensors)
            _drop_python_reads(graph)
            # Compare the captured graph (run uncompiled) with eager mode on other noise
            # than the trace's: this catches (some) structure that the trace fixed.
            fresh = torch.get_rng_state()
            with torch.no_grad():
                want = float(eager(*args))
                torch.set_rng_state(fresh)
                got = float(graph(*params, *tensors))
        except Exception as e:  # any failure means: use the fallback
            raise _failed(e) from e
        finally:
            torch.set_rng_state(state)  # the step itself draws what eager mode would
        if not (math.isfinite(want) and abs(got - want) <= CHECK_RTOL * max(1.0, abs(want))):
            raise CompileError(f"the captured Pyro loss ({got}) differs from the eager one "
                               f"({want}) on the same noise: the model's structure changes "
                               "between calls (e.g. Python control flow on tensor values)")
        compiled = torch.compile(graph, options={"fallback_random": True})
        first = [True]

        def run(*batch: Any) -> Any:
            inputs = (*params, *(batch[i] for i in where))
            if not first[0]:
                return compiled(*inputs)
            try:  # inductor compiles on the first call
                value = compiled(*inputs)
            except Exception as e:
                raise _failed(e) from e
            first[0] = False
            return value

        return run

    def loss(*args: Any) -> Any:
        key = _signature(args)
        if key not in graphs:
            graphs[key] = build(args)
        return graphs[key](*args)

    return loss
