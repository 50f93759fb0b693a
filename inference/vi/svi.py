"""``fit()``: minibatch stochastic variational inference for any Pyro or NumPyro model+guide.

The pair must accept ``(*batch, n_data=N)``, where ``batch`` holds per-datapoint arrays
(or None) sliced along axis 0 and ``n_data`` is the full data size, which the model passes
to its data plate as ``size`` with the minibatch as the subsample. The objective is then
the full-data estimator (N/M)·Σ_minibatch of the local terms plus the global ones once
(Kingma & Welling 2013, eq. 8).

- ``elbo="trace"``: ``Trace_ELBO``, the SGVB estimator A (Monte Carlo log p − log q).
- ``elbo="meanfield"``: ``TraceMeanField_ELBO``, estimator B (analytic KL where it exists).
- L particles per datapoint (``particles``), vectorized in both backends.
- ``objective="iwae"`` / ``"dreg"``: the K-sample importance-weighted bound with K =
  ``particles``, with its own gradient or the doubly-reparameterized one (:mod:`.iwae`).
- ``objective="wake-sleep"`` / ``"rws"``: the wake phase for the model and the sleep phase
  or reweighted wake-sleep's wake-φ for the guide (:mod:`.wake_sleep`).
- Adam or Adagrad.

Every epoch ends with an evaluation of the per-datapoint ELBO (nats) on each named
evaluation set and an atomic checkpoint. Evaluation runs in batches with the local terms
unscaled and every *global* sample site (one outside all plates, e.g. the decoder weights θ
of the Bayesian VAE) scaled by B_b/n, so that over the n points of a set the global
log p(θ) − log q(θ) is counted exactly once (not once per evaluation batch): the recorded
``<name>_elbo`` is (Σᵢ localᵢ + global)/n (with ``eval_global="drop"``, Σᵢ localᵢ/n).
A resumed run continues exactly: the data order
and the random draws of epoch e depend only on (seed, e) and the saved state, so it ends
with the same parameters as an uninterrupted run. A non-finite loss stops the run with a
:class:`TrainingDivergedError` error and leaves the last good checkpoint in place.

Checkpoints (:mod:`.checkpoint`) are one ``.npz`` of plain arrays plus a
JSON header; loading one never executes code.

Data parallelism (``docs/scaling.md``): NumPyro splits every batch over ``devices`` JAX
devices (one jitted program over a mesh); Pyro runs on the ranks of a ``torch.distributed``
process group when one is joined (``torchrun``), each rank on its rows of every batch with
the gradients averaged (:mod:`.data_parallel`). Either way the run is the one-device run up
to the order of float sums, and only the main process writes the checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference import ranks, sharding, signals
from varbayes.inference.backends import check_backend
from varbayes.inference.io import Progress
from varbayes.inference.ppl import (
    accepts,
    checked_pair,
    latent,
    observed,
    to_backend,
)
from varbayes.inference.vi import data_parallel, iwae, wake_sleep
from varbayes.inference.vi.checkpoint import (
    check_compatible,
    flatten_state,
    load_checkpoint,
    make_header,
    save_checkpoint,
    unflatten_state,
)
from varbayes.inference.vi.pyro_compile import CompileError, compile_loss
from varbayes.models.errors import VarbayesError, check

ELBOS = ("trace", "meanfield")
OBJECTIVES = ("elbo", "iwae", "dreg", "wake-sleep", "rws")
#: The importance-sampling estimate of the history (``SVIOptions.is_every``) uses the first
#: this many points of each evaluation set, in chunks of :data:`IS_CHUNK`.
IS_POINTS = 500
IS_CHUNK = 100
OPTIMIZERS = ("adam", "adagrad")
COMPILERS = ("auto", "inductor", "torchscript")
#: ``compiler="auto"`` picks inductor for a Pyro run of at least this many steps. Compiling
#: a loss takes 15-25 s on the 2-core reference machine (a few seconds from inductor's
#: on-disk cache), and the 784-400-20 VAE's step then takes about 2 ms less than with
#: TorchScript (9.1-9.4 against 11.4 ms): it pays off after about 10,000 steps.
INDUCTOR_MIN_STEPS = 10_000

Batch = tuple[Any, ...]
Transform = Callable[[Batch, np.random.Generator], Batch]


class SVIOptions(NamedTuple):
    """How to train; everything except ``epochs`` must match when resuming."""

    backend: str = "numpyro"
    """``numpyro`` or ``pyro``."""
    elbo: str = "meanfield"
    """``trace`` (Trace_ELBO, estimator A) or ``meanfield`` (TraceMeanField_ELBO, B)."""
    particles: int = 1
    """L, samples of the latents per datapoint and step (K for ``iwae`` / ``dreg``)."""
    objective: str = "elbo"
    """``elbo`` (``elbo`` picks the estimator), ``iwae`` (the K-sample importance-weighted
    bound, K = ``particles``), ``dreg`` (the same bound, doubly-reparameterized gradient
    for the guide; see :mod:`.iwae`), ``wake-sleep`` or ``rws`` (the model by the wake
    phase, the guide by the sleep phase or by RWS's wake-φ; see :mod:`.wake_sleep`). Pyro
    runs every objective but ``elbo`` uncompiled."""
    is_every: int = 0
    """Every this many epochs (and after the last), record ``<name>_is``: the IS estimate of
    log p(x) (the ``is_particles``-sample bound, nats per datapoint) on the first
    :data:`IS_POINTS` points of each evaluation set, and ``is_epoch``. 0: never."""
    is_particles: int = 100
    """Importance samples per datapoint of that estimate."""
    optimizer: str = "adam"
    """``adam`` or ``adagrad``."""
    lr: float = 1e-3
    """Step size."""
    epochs: int = 10
    """Passes over the training data (in total, counting resumed ones)."""
    batch_size: int = 100
    """M, datapoints per step; the remainder of each shuffled epoch is dropped."""
    seed: int = 0
    """Seeds the data order, the transforms, the latent draws and the evaluations."""
    eval_batch_size: int = 1000
    """Datapoints per evaluation call."""
    jit: bool = True
    """Pyro only: compile the training ELBO (with ``compiler``); the model must have static
    structure and tensor inputs. NumPyro always compiles."""
    compiler: str = "auto"
    """Pyro with ``jit``: ``inductor`` (``torch.compile`` of the captured loss, see
    :mod:`.pyro_compile`; falls back to TorchScript with a warning where it fails),
    ``torchscript`` (``JitTrace*_ELBO``) or ``auto`` (inductor from
    :data:`INDUCTOR_MIN_STEPS` steps on, where its compile time pays off). The two compile
    the same loss but round differently, so a bit-identical ``--resume`` needs the same one
    (``auto`` decides from ``epochs`` and the data size, so the same command resumes alike)."""
    time_limit: float | None = None
    """Wall-clock budget in seconds: stop after the first epoch that ends past it (the
    checkpoint is complete, so ``--resume`` can continue). None: run all epochs."""
    devices: int = 1
    """NumPyro: split every minibatch (and evaluation batch) over the first ``devices`` JAX
    devices, params and optimizer state replicated (:mod:`varbayes.inference.sharding`);
    ``batch_size`` must divide by it. The same run on any number of devices, up to the
    order of floating-point sums. Pyro runs data-parallel over the ranks of ``torchrun``
    instead (:mod:`.data_parallel`), so this stays 1 there."""


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    params: dict[str, Any]
    """Param name -> value in its *constrained* space (a positive scale as itself), as the
    backend's arrays (torch tensors or JAX arrays): what ``poutine.substitute`` /
    ``handlers.substitute`` and the ``params=`` of the other algorithms take."""
    history: dict[str, list[float]]
    """Per epoch: ``objective`` (the running training objective per datapoint, nats),
    ``<name>_elbo`` for every evaluation set (nats per datapoint, the global terms counted
    once for the whole set and divided by its size), ``seconds``."""
    epochs: int
    """Epochs completed (including resumed ones)."""
    start_epoch: int
    """Epochs that were already done in the checkpoint this run resumed from (0 if fresh)."""
    n_params: int
    """Number of scalar parameters."""


class TrainingDivergedError(VarbayesError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def check_options(options: SVIOptions) -> None:
    """Raise :class:`VarbayesError` naming the first bad option."""
    check_backend(options.backend, "--backend")
    check(options.elbo in ELBOS, f"--elbo must be one of {ELBOS}, got {options.elbo!r}")
    check(options.objective in OBJECTIVES,
          f"--objective must be one of {OBJECTIVES}, got {options.objective!r}")
    check(isinstance(options.is_every, int) and options.is_every >= 0,
          f"--is-every must be >= 0 (0: never), got {options.is_every!r}")
    check(options.is_particles >= 1, f"--is-particles must be >= 1, got {options.is_particles}")
    check(options.compiler in COMPILERS,
          f"--compiler must be one of {COMPILERS}, got {options.compiler!r}")
    check(options.optimizer in OPTIMIZERS,
          f"--optimizer must be one of {OPTIMIZERS}, got {options.optimizer!r}")
    check(options.particles >= 1, f"--particles must be >= 1, got {options.particles}")
    if options.objective in wake_sleep.PHI:
        wake_sleep.check_particles(options.objective, options.particles)
    check(options.lr > 0 and math.isfinite(options.lr), f"--lr must be > 0, got {options.lr}")
    check(options.epochs >= 1, f"--epochs must be >= 1, got {options.epochs}")
    check(options.batch_size >= 1, f"--batch-size must be >= 1, got {options.batch_size}")
    check(options.time_limit is None or options.time_limit > 0,
          f"--time-limit must be > 0, got {options.time_limit}")
    check(options.eval_batch_size >= 1,
          f"eval_batch_size must be >= 1, got {options.eval_batch_size}")
    check(isinstance(options.devices, int) and options.devices >= 1,
          f"--devices must be >= 1, got {options.devices!r}")


def _check_pyro_parallel(options: SVIOptions) -> None:
    check(options.devices == 1, f"--devices {options.devices} is for the NumPyro backend: "
                                "run a Pyro model on several processes with --nproc N "
                                "(torchrun and torch.distributed)")


def _check_numpyro_parallel(options: SVIOptions) -> None:
    check(not ranks.launched(), "this NumPyro run was started by torchrun: NumPyro runs in "
                                "one process and uses several devices with --devices N; "
                                "torchrun (--nproc) is for the Pyro backend")
    sharding.check_devices(options.devices)


def _n_rows(arrays: Sequence[Any], what: str) -> int:
    sizes = {len(a) for a in arrays if a is not None}
    check(len(sizes) == 1, f"{what} arrays must share their first dimension, got sizes "
                           f"{sorted(sizes)}")
    return sizes.pop()


def _as_arrays(data: Any, what: str) -> tuple[Any, ...]:
    """One array (numpy, torch or JAX) as a one-element tuple; a sequence as a tuple."""
    if hasattr(data, "shape"):
        check(len(data.shape) >= 1, f"{what} must have a datapoint axis, got a scalar")
        return (data,)
    check(isinstance(data, Sequence) and not isinstance(data, str),
          f"{what} must be an array or a tuple of per-datapoint arrays, got "
          f"{type(data).__name__}")
    for i, a in enumerate(data):
        check(a is None or len(getattr(a, "shape", ())) >= 1,
              f"{what}[{i}] must be an array with a datapoint axis (N, ...), got "
              f"{type(a).__name__}: pass the arrays as a tuple, e.g. (x, y), or one array")
    return tuple(data)


def bind_n_data(fn: Callable[..., None], n: int | None) -> Callable[..., None]:
    """``fn`` with ``n_data=n`` bound when it takes that keyword, else ``fn`` itself."""
    return functools.partial(fn, n_data=n) if accepts(fn, "n_data") else fn


def check_pair(model: Callable[..., None], guide: Callable[..., None], data: Sequence[Any],
               N: int, options: SVIOptions) -> None:
    """Refuse, in one line, a pair of the other backend and a minibatch the model does not
    scale to the full data (each observed site's log density must be scaled by N/M)."""
    M = min(options.batch_size, N)
    if options.devices > 1:
        sharding.check_divides(M, options.devices, "--batch-size")
    if ranks.world() > 1:
        sharding.check_divides(M, ranks.world(), "--batch-size", "--nproc")
    batch = to_backend(_take(data, slice(0, M)), options.backend)
    if M < N and not accepts(model, "n_data"):
        raise VarbayesError(
            f"model {getattr(model, '__name__', '')!r} takes no n_data keyword, so fit cannot "
            f"scale a minibatch of {M} to the {N} datapoints: add n_data=None to its "
            "signature and use plate('data', n_data or M, subsample_size=M), or set "
            f"batch_size >= {N} (full batch)")
    # the seed svi.init will use: a NumPyro AutoGuide sets up its initial values here
    _, _, msites, gsites = checked_pair(bind_n_data(model, N), bind_n_data(guide, N), batch,
                                        {}, backend=options.backend,
                                        seed=_epoch_seed(options.seed, 0, 3))
    if M == N:
        return
    want = N / M
    for s in observed(msites):
        check(np.allclose(s.scale, want, rtol=1e-6),
              f"observed site {s.name!r} has its log density scaled by {_show(s.scale)}, not "
              f"by N/M = {N}/{M}: put it in plate('data', n_data or M, subsample_size=M) "
              "with the n_data that fit passes, or set batch_size to the data size")
    scales = {s.name: s.scale for s in latent(msites)}
    for s in latent(gsites):
        if s.name in scales:
            check(np.allclose(s.scale, scales[s.name], rtol=1e-6),
                  f"guide site {s.name!r} is scaled by {_show(s.scale)} but the model's by "
                  f"{_show(scales[s.name])}: give the guide the model's data plate with n_data")


def _weighted_batch(data: Sequence[Any], N: int, options: SVIOptions) -> Batch | None:
    """The first batch, when the run needs the importance-weighted bound (else None)."""
    if options.objective == "elbo" and options.is_every == 0:
        return None
    return to_backend(_take(data, slice(0, min(options.batch_size, N))), options.backend)


def _check_pyro_weighted(model: Callable[..., None], guide: Callable[..., None],
                         data: Sequence[Any], N: int, options: SVIOptions) -> None:
    """Refuse, before any work, a pair the importance-weighted bound cannot weight (a latent
    outside the data plate, no reparameterized sampler): one bound on the first batch."""
    import torch

    batch = _weighted_batch(data, N, options)
    if batch is not None:  # (the untransformed batch: out-of-support warnings are moot)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pyro_objective(options._replace(particles=2)).differentiable_loss(
                bind_n_data(model, N), bind_n_data(guide, N), *batch)


def _check_numpyro_weighted(model: Callable[..., None], guide: Callable[..., None],
                            data: Sequence[Any], N: int, options: SVIOptions) -> None:
    """As :func:`_check_pyro_weighted`, for NumPyro."""
    import jax

    batch = _weighted_batch(data, N, options)
    if batch is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            numpyro_objective(options._replace(particles=2)).loss(
                jax.random.PRNGKey(0), {}, bind_n_data(model, N), bind_n_data(guide, N),
                *batch)


def pyro_objective(options: SVIOptions) -> Any:
    """The Pyro object of a non-ELBO ``options.objective`` with K = ``options.particles``:
    :class:`.iwae.PyroIWAE` or :class:`.wake_sleep.PyroWakeSleep`."""
    if options.objective in wake_sleep.PHI:
        return wake_sleep.PyroWakeSleep(options.particles, options.objective)
    return iwae.PyroIWAE(options.particles, dreg=options.objective == "dreg")


def numpyro_objective(options: SVIOptions) -> Any:
    """As :func:`pyro_objective`, the NumPyro ELBO of a non-ELBO objective."""
    if options.objective in wake_sleep.PHI:
        return wake_sleep.numpyro_wake_sleep(options.particles, options.objective)
    return iwae.numpyro_iwae(options.particles, dreg=options.objective == "dreg")


def _show(scale: Any) -> str:
    a = np.asarray(scale)
    return f"{float(a):g}" if a.size == 1 else f"an array (mean {float(a.mean()):g})"


def _take(arrays: Sequence[Any], idx: np.ndarray | slice) -> Batch:
    return tuple(None if a is None else a[idx] for a in arrays)


def _epoch_rng(seed: int, epoch: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream, *more]))


def _epoch_seed(seed: int, epoch: int, stream: int, *more: int) -> int:
    return int(_epoch_rng(seed, epoch, stream, *more).integers(2**31 - 1))


# ------------------------------------------------------------------------------ the loop

def fit(model: Callable[..., None], guide: Callable[..., None], data: Sequence[Any], *,
        options: SVIOptions, eval_sets: Mapping[str, Sequence[Any]] | None = None,
        transform: Transform | None = None, checkpoint: str | Path | None = None,
        resume: bool = False, meta: Mapping[str, Any] | None = None,
        eval_hide: Sequence[str] = (),
        export: Callable[[dict[str, Any]], Mapping[str, np.ndarray]] | None = None,
        eval_global: str = "once") -> FitResult:
    """Train ``model``/``guide`` by minibatch SVI and return the params and the history.

    Parameters
    ----------
    model, guide : Pyro or NumPyro callables ``(*batch, n_data=N)`` for ``options.backend``
        (a pair of the other backend is refused). ``n_data`` is passed only to a function
        that takes it; a model that minibatches (``batch_size`` < N) must take it and scale
        its observed sites by N/M through ``plate("data", n_data or M, subsample_size=M)``,
        which is checked on the first batch.
    data : one per-datapoint array (N, ...) or a tuple of them (None entries pass through
        as None); numpy, torch or JAX, converted to the backend's arrays per batch.
    options : :class:`SVIOptions`.
    eval_sets : name → arrays like ``data``; after every epoch the per-datapoint ELBO
        (nats, same estimator as training, plates unscaled, global sites counted once per
        set) is recorded as ``<name>_elbo``.
    transform : ``(batch, rng) -> batch`` applied to each minibatch, e.g. a fresh
        Bernoulli binarization; ``rng`` depends only on (seed, epoch).
    checkpoint : ``.npz`` path written atomically after every epoch; None for none.
    resume : continue from ``checkpoint`` (which must match backend, options and ``meta``).
    meta : JSON-able description of the model (e.g. its config) stored in and checked
        against the checkpoint.
    eval_hide : sites left out of the evaluated ELBO (e.g. a weight prior factor).
    eval_global : ``once``: global sample sites (outside all plates) enter the evaluated
        ELBO once per set; ``drop``: they are still drawn from the guide but left out, so
        ``<name>_elbo`` is the per-datapoint local bound E_q[log p(x, z|θ) − log q(z|x)]
        (e.g. the Bayesian VAE, whose KL(q(θ)‖p(θ)) is reported on its own).
    export : ``params -> {name: array}``, called at every checkpoint; its arrays are stored
        under ``export/<name>`` so that readers need not rebuild the optimizer state
        (e.g. the flat VAE weights for ``varbayes vae sample``).
    """
    check_options(options)
    check(eval_global in ("once", "drop"), f"eval_global must be 'once' or 'drop', got "
                                           f"{eval_global!r}")
    data = _as_arrays(data, "data")
    eval_sets = {k: _as_arrays(v, f"eval_sets[{k!r}]") for k, v in (eval_sets or {}).items()}
    meta = json.loads(json.dumps(dict(meta or {})))
    N = _n_rows(data, "training")
    for name, arrays in eval_sets.items():
        _n_rows(arrays, f"evaluation set {name!r}")
    runner, check_parallel, check_weighted = (
        (_pyro_runner, _check_pyro_parallel, _check_pyro_weighted) if options.backend == "pyro"
        else (_numpyro_runner, _check_numpyro_parallel, _check_numpyro_weighted))
    check_parallel(options)
    check_pair(model, guide, data, N, options)
    check_weighted(model, guide, data, N, options)
    header: dict[str, Any] | None = None
    saved: dict[str, np.ndarray] | None = None
    if resume:
        check(checkpoint is not None, "--resume needs a checkpoint path")
        saved, header = load_checkpoint(checkpoint)  # type: ignore[arg-type]
        check_compatible(header, options, meta, checkpoint)  # type: ignore[arg-type]
    return runner(model, guide, data, N, options, eval_sets, transform,
                  None if checkpoint is None else Path(checkpoint), saved, header, meta,
                  tuple(eval_hide), export, eval_global == "once")


def pyro_global_scale(fn: Callable[..., None], factor: float) -> Callable[..., None]:
    """``fn`` with every sample site outside all plates (a global site) scaled by ``factor``.

    Evaluating batch b of an n-point set with ``factor = B_b/n`` counts the global terms
    once over the whole set.
    """
    from pyro.poutine.messenger import Messenger

    class GlobalScale(Messenger):
        def _process_message(self, msg: dict) -> None:
            if msg["type"] == "sample" and not msg["cond_indep_stack"]:
                msg["scale"] = factor * msg["scale"]

    return GlobalScale()(fn)


def numpyro_global_scale(fn: Callable[..., None], factor: Any) -> Callable[..., None]:
    """NumPyro twin of :func:`pyro_global_scale` (``factor`` may be a traced scalar)."""
    from numpyro.primitives import Messenger

    class GlobalScale(Messenger):
        def process_message(self, msg: dict) -> None:
            if msg["type"] == "sample" and not msg.get("cond_indep_stack"):
                scale = msg.get("scale")
                msg["scale"] = factor if scale is None else factor * scale

    return GlobalScale(fn)


def _batches(N: int, M: int, rng: np.random.Generator) -> list[np.ndarray]:
    M = min(M, N)
    perm = rng.permutation(N)
    return [perm[i * M:(i + 1) * M] for i in range(N // M)]


def _steps_per_epoch(N: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of N datapoints (the shuffled remainder is dropped)."""
    return max(N // min(batch_size, N), 1)


def _diverged(epoch: int, step: int, checkpoint: Path | None, done: int) -> TrainingDivergedError:
    where = (f"the last good checkpoint ({done} epochs) is kept in {checkpoint}"
             if checkpoint is not None and done > 0 else "no checkpoint was written")
    return TrainingDivergedError(f"the loss became NaN or infinite in epoch {epoch + 1}, step "
                            f"{step + 1}; {where}: lower --lr or check the data")


def _interrupted(epoch: int, epochs: int, checkpoint: Path | None) -> signals.Interrupted:
    signum = signals.pending()
    name = signals.signal.Signals(signum).name
    if checkpoint is None:
        kept = "this run writes no checkpoint"
    elif epoch > 0:
        kept = f"{checkpoint} holds {epoch} complete epoch(s): rerun with --resume to continue"
    else:
        kept = "no epoch was complete, so no checkpoint was written"
    return signals.Interrupted(signum, f"interrupted by {name} in epoch {epoch + 1} of "
                                       f"{epochs}; {kept}")


def run_epochs(options: SVIOptions, N: int, data: Sequence[Any], transform: Transform | None,
                start: int, history: dict[str, list[float]], step: Callable[[Batch], float],
                begin_epoch: Callable[[int], None], evaluate: Callable[[int], dict[str, float]],
                save: Callable[[int, dict[str, list[float]]], None],
                checkpoint: Path | None, finite: Callable[[list[Any]], int | None]) -> int:
    """Run epochs ``start..options.epochs``; return the number of epochs completed.

    One progress display for the whole run, counting steps, with the epoch and the last
    epoch's objective and evaluation ELBOs (nats per datapoint) as its fields.
    """
    t_start = time.perf_counter()
    done = start
    per_epoch = _steps_per_epoch(N, options.batch_size)
    with Progress(per_epoch * (options.epochs - start), "fit", quiet=not ranks.is_main(),
                  time_limit=options.time_limit) as bar:
        for epoch in range(start, options.epochs):
            bar.note(epoch=f"{epoch + 1}/{options.epochs}")
            _one_epoch(options, N, data, transform, epoch, history, step, begin_epoch, evaluate,
                       save, checkpoint, finite, bar)
            done = epoch + 1
            late = (options.time_limit is not None
                    and time.perf_counter() - t_start > options.time_limit)
            if ranks.all_max(float(late)) > 0:  # every rank stops after the same epoch
                break
    return done


def _one_epoch(options: SVIOptions, N: int, data: Sequence[Any], transform: Transform | None,
               epoch: int, history: dict[str, list[float]], step: Callable[[Batch], float],
               begin_epoch: Callable[[int], None], evaluate: Callable[[int], dict[str, float]],
               save: Callable[[int, dict[str, list[float]]], None], checkpoint: Path | None,
               finite: Callable[[list[Any]], int | None], bar: Progress) -> None:
    """One epoch: steps, the NaN check, evaluation, history, checkpoint."""
    rng = _epoch_rng(options.seed, epoch, 0)
    batches = _batches(N, options.batch_size, rng)
    begin_epoch(epoch)
    t0 = time.perf_counter()
    losses = []
    for idx in batches:
        batch = _take(data, idx)
        if transform is not None:
            batch = transform(batch, rng)
        losses.append(step(batch))
        try:  # SIGINT / SIGTERM: stop after this step, naming the checkpoint
            signals.check()
            bar.update()  # checks again: a signal that lands between the two is named too
        except signals.Interrupted:
            raise _interrupted(epoch, options.epochs, checkpoint) from None
    bad = finite(losses)
    if bad is not None:
        raise _diverged(epoch, bad, checkpoint, epoch)
    seconds = time.perf_counter() - t0
    scores = evaluate(epoch)
    if not all(math.isfinite(v) for v in scores.values()):
        raise _diverged(epoch, len(batches) - 1, checkpoint, epoch)
    history["objective"].append(-float(np.mean([float(v) for v in losses])) / N)
    for k, v in scores.items():
        history.setdefault(k, []).append(v)
    history["seconds"].append(seconds)
    bar.note(objective=history["objective"][-1],
             **{k: float(v) for k, v in scores.items() if k.endswith("_elbo")})
    if checkpoint is not None:
        save(epoch + 1, history)


def _is_due(options: SVIOptions, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with the IS estimate of ``is_every``."""
    return options.is_every > 0 and ((epoch + 1) % options.is_every == 0
                                     or epoch + 1 == options.epochs)


def _is_chunks(arrays: Sequence[Any], name: str) -> list[slice]:
    n = min(_n_rows(arrays, name), IS_POINTS)
    return [slice(i, min(i + IS_CHUNK, n)) for i in range(0, n, IS_CHUNK)]


def first_nonfinite(losses: list[Any]) -> int | None:
    """Index of the first non-finite JAX loss of an epoch (one transfer), or None."""
    import jax.numpy as jnp

    values = np.asarray(jnp.stack(losses)) if losses else np.zeros(0)
    bad = np.flatnonzero(~np.isfinite(values))
    return int(bad[0]) if bad.size else None


def _new_history(eval_sets: Mapping[str, Any], header: Mapping[str, Any] | None
                 ) -> dict[str, list[float]]:
    if header is not None:
        return {k: list(v) for k, v in header["history"].items()}
    return {"objective": [], "seconds": [], **{f"{k}_elbo": [] for k in eval_sets}}


# --------------------------------------------------------------------------------- Pyro

def _jit_meanfield_class() -> type:
    import pyro

    class JitTraceMeanFieldELBO(pyro.infer.JitTraceMeanField_ELBO):
        """``JitTraceMeanField_ELBO`` that compiles once.

        In Pyro 1.9.x ``JitTraceMeanField_ELBO.differentiable_loss`` tests
        ``self._loss_and_surrogate_loss`` (the attribute ``JitTrace_ELBO`` uses) but stores
        its compiled function in ``self._differentiable_loss``, so the test never passes: every
        step builds a new ``CompiledFunction`` and runs ``torch.jit.trace`` again (three
        forward passes per step, 3-5x slower than the uncompiled ELBO). Setting the tested
        attribute once the function exists makes later calls reuse it.
        """

        def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, "_differentiable_loss", None) is not None:
                self._loss_and_surrogate_loss = self._differentiable_loss
            return super().differentiable_loss(model, guide, *args, **kwargs)

    return JitTraceMeanFieldELBO


def jit_trace_meanfield_elbo(**kwargs: Any) -> Any:
    """A fixed :class:`pyro.infer.JitTraceMeanField_ELBO` (compiles once; see the class)."""
    return _jit_meanfield_class()(**kwargs)


def pyro_elbo(options: SVIOptions, jit: bool | None = None) -> Any:
    """The Pyro ELBO object for ``options`` (particles vectorized when L > 1).

    ``jit`` (default ``options.jit``) picks ``JitTrace_ELBO`` or the fixed
    ``JitTraceMeanField_ELBO`` of :func:`jit_trace_meanfield_elbo`.
    """
    import pyro

    jit = options.jit if jit is None else jit
    if options.elbo == "meanfield":
        cls = _jit_meanfield_class() if jit else pyro.infer.TraceMeanField_ELBO
    else:
        cls = pyro.infer.JitTrace_ELBO if jit else pyro.infer.Trace_ELBO
    L = options.particles
    kwargs: dict[str, Any] = {"ignore_jit_warnings": True} if jit else {}
    return cls(num_particles=L, vectorize_particles=L > 1, max_plate_nesting=1, **kwargs)


def pyro_optimizer(options: SVIOptions, params: Sequence[Any]) -> Any:
    """One torch optimizer over every param tensor (not Pyro's one optimizer per param):
    the fused implementation (one kernel for all params), else the ``foreach`` one."""
    import torch

    cls = torch.optim.Adam if options.optimizer == "adam" else torch.optim.Adagrad
    params = list(params)
    try:
        return cls(params, lr=options.lr, fused=True)
    except (RuntimeError, TypeError):  # fused is not available for this device or dtype
        return cls(params, lr=options.lr, foreach=True)


def pyro_compiler(options: SVIOptions, steps: int | None) -> str:
    """The compiler a Pyro run of ``steps`` training steps uses: ``inductor``,
    ``torchscript`` or ``none`` (``jit=False``, and every objective but ``elbo``, which
    run uncompiled); None steps: a long run."""
    if not options.jit or options.objective != "elbo":
        return "none"
    if options.compiler != "auto":
        return options.compiler
    return "inductor" if steps is None or steps >= INDUCTOR_MIN_STEPS else "torchscript"


def pyro_loss(options: SVIOptions, model: Callable[..., None], guide: Callable[..., None],
              params: Sequence[Any], compiler: str) -> Callable[..., Any]:
    """``loss(*batch) -> Tensor``: the training ELBO's differentiable loss (nats, negated)
    compiled with ``compiler`` (see :func:`pyro_compiler`). Inductor falls back to
    TorchScript, with a warning, on the first call it cannot compile."""
    if options.objective != "elbo":
        return functools.partial(pyro_objective(options).differentiable_loss, model, guide)
    if compiler == "none":
        return functools.partial(pyro_elbo(options, jit=False).differentiable_loss, model,
                                 guide)
    torchscript = functools.partial(pyro_elbo(options, jit=True).differentiable_loss, model,
                                    guide)
    if compiler == "torchscript":
        return torchscript
    compiled = compile_loss(pyro_elbo(options, jit=False), model, guide, params)
    current = [compiled]

    def loss(*batch: Any) -> Any:
        try:
            return current[0](*batch)
        except CompileError as e:
            if current[0] is torchscript:
                raise
            warnings.warn(f"{e}; training with TorchScript instead", stacklevel=2)
            current[0] = torchscript
            return torchscript(*batch)

    return loss


def pyro_step(loss: Callable[..., Any], optimizer: Any,
              reduce: Callable[[Any], float] | None = None) -> Callable[..., Any]:
    """``step(*batch) -> loss``: the differentiable loss (:func:`pyro_loss`), backward, the
    optimizer step.

    Pyro's own ``SVI.step`` does the same with a per-param optimizer wrapper and a second
    trace to collect the params; this is the faster route measured in ``benchmarks/vae.py``.
    Run it under ``pyro.validation_enabled(False)`` for speed. ``reduce(loss)``, between
    backward and the optimizer step, may average the gradients over ranks and returns the
    loss to report (:func:`.data_parallel.average_gradients`).
    """

    def step(*batch: Any) -> Any:
        value = loss(*batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if reduce is not None:
            value = reduce(value)
        optimizer.step()
        return value

    return step


def _check_params(store: Any, names: Sequence[str]) -> None:
    new = sorted(set(store.keys()) - set(names))
    check(not new, f"the model or guide created params {new} after the first trace of a "
                   "batch; fit() optimizes only params that exist then: create every param on "
                   "every call (e.g. not inside a data-dependent branch)")


def _pyro_runner(model, guide, data, N, options, eval_sets, transform, checkpoint,
                 saved, header, meta, eval_hide, export, count_global):
    import pyro
    import torch
    from pyro import poutine

    def tensors(batch: Batch) -> Batch:
        return to_backend(tuple(batch), "pyro")

    pyro.clear_param_store()
    eval_elbo = pyro_elbo(options, jit=False)
    world, rank = ranks.world(), ranks.rank()

    def step_args(batch: Batch) -> Batch:
        args = list(tensors(batch))
        if options.jit:  # compiled functions take tensors only: drop trailing Nones
            while args and args[-1] is None:
                args.pop()
            check(all(a is not None for a in args),
                  "the compiled Pyro ELBO needs tensor inputs, got None in the middle of the "
                  "batch: pass jit=False (--no-jit)")
        return tuple(args)
    train_model = bind_n_data(model, N)
    train_guide = bind_n_data(guide, N)
    M = min(options.batch_size, N)
    if world > 1:  # each rank its M/world rows, drawn as one process draws them
        train_model = data_parallel.rank_draws(train_model, N, M // world, rank, world,
                                               warn=False)  # its latents are the guide's
        train_guide = data_parallel.rank_draws(train_guide, N, M // world, rank, world)
    eval_model = poutine.block(bind_n_data(model, None), hide=list(eval_hide))
    eval_guide = bind_n_data(guide, None)

    def local(batch: Batch) -> Batch:
        return data_parallel.local_rows(batch, rank, world) if world > 1 else tuple(batch)

    with pyro.validation_enabled(False):
        first = tensors(local(_take(data, slice(0, M))))
        # Register every param: those of the training and of the evaluation calls (guide
        # first, as the ELBO runs it). A param created only later would be missing from the
        # optimizer and the checkpoint, so _check_params refuses that at
        # the step that creates it.
        for fn in (train_guide, train_model, eval_guide, eval_model):
            poutine.trace(fn).get_trace(*first)
        store = pyro.get_param_store()
        named = dict(store.named_parameters())  # unconstrained leaf tensors
        names = sorted(named)
        params = [named[n] for n in names]
        optimizer = pyro_optimizer(options, params)
        start = 0
        if saved is not None and header is not None:
            check(header.get("param_names") == names,
                  f"checkpoint {checkpoint} holds params {header.get('param_names')}, this "
                  f"model has {names}: use the original configuration or a new --out")
            with torch.no_grad():
                for n, p in zip(names, params, strict=True):
                    value = torch.from_numpy(np.array(saved[f"param/{n}"]))
                    check(value.shape == p.shape, f"checkpoint param {n} has shape "
                          f"{tuple(value.shape)}, the model needs {tuple(p.shape)}")
                    p.copy_(value)
            optimizer.load_state_dict(unflatten_state(header["optim"], saved))
            start = int(header["epoch"])
        history = _new_history(eval_sets, header)

        compiler = pyro_compiler(options,
                                 _steps_per_epoch(N, options.batch_size) * options.epochs)
        loss = pyro_loss(options, train_model, train_guide, params, compiler)
        one_step = pyro_step(loss, optimizer, None if world == 1 else functools.partial(
            data_parallel.average_gradients, params))
        if compiler != "none":
            # Compile before any real step (gradients discarded, params untouched): inductor
            # compiles (or falls back) on the first call, and the TorchScript profiling
            # executor runs the first calls unoptimized and then switches to a fused graph
            # with slightly different rounding. So a fresh run and a resumed one take every
            # step on the same graph and end bit-identical.
            for _ in range(3):
                loss(*step_args(_take(data, slice(0, len(first[0]))))).backward()
            optimizer.zero_grad(set_to_none=True)

        def step(batch: Batch) -> float:
            value = one_step(*step_args(local(batch)))  # a tensor, or the ranks' float
            loss = value.item() if isinstance(value, torch.Tensor) else value
            if len(store.keys()) != len(names):
                _check_params(store, names)
            return loss

        def begin_epoch(epoch: int) -> None:
            torch.manual_seed(_epoch_seed(options.seed, epoch, 1))

        def evaluate(epoch: int) -> dict[str, float]:
            # batch j is rank j % world's, its draws seeded by (seed, epoch, j): the same
            # numbers for any number of ranks
            scores = {}
            B = options.eval_batch_size
            for name, arrays in eval_sets.items():
                n = _n_rows(arrays, name)
                total = torch.zeros(1, dtype=torch.float64)
                for j, i in enumerate(range(0, n, B)):
                    if j % world != rank:
                        continue
                    torch.manual_seed(_epoch_seed(options.seed, epoch, 2, j))
                    batch = tensors(_take(arrays, slice(i, i + B)))
                    f = len(batch[0]) / n if count_global else 0.0  # once over the set
                    total += eval_elbo.loss(pyro_global_scale(eval_model, f),
                                            pyro_global_scale(eval_guide, f), *batch)
                scores[f"{name}_elbo"] = -float(ranks.all_sum(total).item()) / n
            if _is_due(options, epoch):
                scores.update(estimate(epoch))
            return scores

        def estimate(epoch: int) -> dict[str, float]:
            bound = iwae.PyroIWAE(options.is_particles)
            scores: dict[str, float] = {"is_epoch": epoch + 1}
            with torch.no_grad():
                for name, arrays in eval_sets.items():
                    total = torch.zeros(1, dtype=torch.float64)
                    chunks = _is_chunks(arrays, name)
                    for j, rows in enumerate(chunks):
                        if j % world != rank:
                            continue
                        torch.manual_seed(_epoch_seed(options.seed, epoch, 4, j))
                        total += bound.bound(eval_model, eval_guide,
                                             *tensors(_take(arrays, rows))).double().sum()
                    scores[f"{name}_is"] = float(ranks.all_sum(total).item()) / chunks[-1].stop
            return scores

        def save(epoch: int, history: dict[str, list[float]]) -> None:
            if not ranks.is_main():  # rank 0 writes; the ranks hold the same state
                return
            arrays = {f"param/{n}": p.detach().numpy().copy()
                      for n, p in zip(names, params, strict=True)}
            skeleton = flatten_state(optimizer.state_dict(), "optim", arrays)
            if export is not None:
                arrays.update({f"export/{k}": np.asarray(v)
                               for k, v in export(constrained()).items()})
            save_checkpoint(checkpoint, arrays, make_header(options, meta, epoch, history,
                                                       param_names=names, optim=skeleton))

        def constrained() -> dict[str, Any]:
            # the param store's values in their constrained space (a positive scale as
            # itself, not its log), as NumPyro's get_params returns them
            with torch.no_grad():
                return {n: store[n].detach().clone() for n in names}

        def finite(losses: list[float]) -> int | None:
            bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
            return bad[0] if bad else None

        done = run_epochs(options, N, data, transform, start, history, step, begin_epoch,
                           evaluate, save, checkpoint, finite)
    return FitResult(constrained(), history, done, start,
                     int(sum(p.numel() for p in params)))


# ------------------------------------------------------------------------------ NumPyro

def numpyro_svi(model: Callable[..., None], guide: Callable[..., None],
                options: SVIOptions) -> Any:
    """NumPyro ``SVI`` with the ELBO and the optax optimizer of ``options``."""
    import optax
    from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
    from numpyro.optim import optax_to_numpyro

    if options.objective != "elbo":
        loss = numpyro_objective(options)
    else:
        elbo_cls = TraceMeanField_ELBO if options.elbo == "meanfield" else Trace_ELBO
        loss = elbo_cls(num_particles=options.particles)
    if options.optimizer == "adam":
        tx = optax.adam(options.lr)
    else:  # torch's Adagrad defaults: no initial accumulator, eps 1e-10
        tx = optax.adagrad(options.lr, initial_accumulator_value=0.0, eps=1e-10)
    return SVI(model, guide, optax_to_numpyro(tx), loss)


def _numpyro_runner(model, guide, data, N, options, eval_sets, transform, checkpoint,
                    saved, header, meta, eval_hide, export, count_global):
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    train_model = bind_n_data(model, N)
    train_guide = bind_n_data(guide, N)
    eval_model = handlers.block(bind_n_data(model, None), hide=list(eval_hide))
    eval_guide = bind_n_data(guide, None)
    svi = numpyro_svi(train_model, train_guide, options)
    elbo = numpyro_svi(train_model, train_guide, options._replace(objective="elbo")).loss

    mesh = sharding.mesh(options.devices) if options.devices > 1 else None

    def jarr(batch: Batch) -> Batch:
        """The batch as JAX arrays; on a mesh split over its devices where the rows divide
        by them (else, e.g. a short last evaluation batch, copied to every device)."""
        arrays = to_backend(tuple(batch), "numpyro")
        if mesh is None:
            return arrays
        rows = _n_rows(arrays, "batch")
        if rows % options.devices == 0:
            return sharding.shard_rows(arrays, mesh)
        return sharding.replicate(arrays, mesh)

    first = jarr(_take(data, slice(0, min(options.batch_size, N))))
    state = svi.init(jax.random.PRNGKey(_epoch_seed(options.seed, 0, 3)), *first)
    # The initial params alias the arrays of the modules passed to the model; copy them, as
    # the compiled update donates (and so deletes) the state it is given.
    state = jax.tree_util.tree_map(jnp.copy, state)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    start = 0
    if saved is not None and header is not None:
        n_saved = int(header.get("n_leaves", -1))
        check(n_saved == len(leaves), f"checkpoint {checkpoint} holds {n_saved} state arrays, "
                                      f"this model needs {len(leaves)}: use the original "
                                      "configuration or a new --out")
        new = []
        for i, leaf in enumerate(leaves):
            value = saved[f"state/{i}"]
            check(value.shape == np.shape(leaf) and value.dtype == np.asarray(leaf).dtype,
                  f"checkpoint state array {i} is {value.dtype}{list(value.shape)}, the model "
                  f"needs {np.asarray(leaf).dtype}{list(np.shape(leaf))}: use the original "
                  "configuration or a new --out")
            new.append(jnp.asarray(value))
        state = jax.tree_util.tree_unflatten(treedef, new)
        start = int(header["epoch"])
    if mesh is not None:
        state = sharding.replicate(state, mesh)
    history = _new_history(eval_sets, header)
    # Donating the old state lets XLA update the parameters and optimizer moments in place:
    # 25-35% faster per step on the 2-core CPU for a 784-400-20 VAE (benchmarks/vae.py).
    update = jax.jit(svi.update, donate_argnums=0)
    eval_loss = jax.jit(lambda params, key, f, *batch: elbo.loss(
        key, params, numpyro_global_scale(eval_model, f), numpyro_global_scale(eval_guide, f),
        *batch))
    is_objective = iwae.numpyro_iwae(options.is_particles)
    is_bound = jax.jit(lambda params, key, *batch: jnp.sum(is_objective.bound(
        key, params, eval_model, eval_guide, *batch)))
    holder = {"state": state}

    def step(batch: Batch) -> Any:
        holder["state"], loss = update(holder["state"], *jarr(batch))
        return loss

    def evaluate(epoch: int) -> dict[str, float]:
        params = svi.get_params(holder["state"])
        key = jax.random.PRNGKey(_epoch_seed(options.seed, epoch, 2))
        scores = {}
        B = options.eval_batch_size
        for name, arrays in eval_sets.items():
            n = _n_rows(arrays, name)
            total = 0.0
            for j, i in enumerate(range(0, n, B)):
                batch = jarr(_take(arrays, slice(i, i + B)))
                f = jnp.float32(len(batch[0]) / n if count_global else 0.0)  # once per set
                total += float(eval_loss(params, jax.random.fold_in(key, j), f, *batch))
            scores[f"{name}_elbo"] = -total / n
        if _is_due(options, epoch):
            key = jax.random.PRNGKey(_epoch_seed(options.seed, epoch, 4))
            scores["is_epoch"] = epoch + 1
            for name, arrays in eval_sets.items():
                chunks = _is_chunks(arrays, name)
                total = 0.0
                for j, rows in enumerate(chunks):
                    total += float(is_bound(params, jax.random.fold_in(key, j),
                                            *jarr(_take(arrays, rows))))
                scores[f"{name}_is"] = total / chunks[-1].stop
        return scores

    def save(epoch: int, history: dict[str, list[float]]) -> None:
        leaves = jax.tree_util.tree_leaves(holder["state"])
        arrays = {f"state/{i}": np.asarray(v) for i, v in enumerate(leaves)}
        if export is not None:  # computed by every JAX process: one program over the mesh
            arrays.update({f"export/{k}": np.asarray(v)
                           for k, v in export(svi.get_params(holder["state"])).items()})
        if not ranks.is_main():  # JAX process 0 writes
            return
        save_checkpoint(checkpoint, arrays, make_header(options, meta, epoch, history,
                                                   n_leaves=len(leaves)))

    done = run_epochs(options, N, data, transform, start, history, step, lambda e: None,
                       evaluate, save, checkpoint, first_nonfinite)
    params = svi.get_params(holder["state"])
    if mesh is not None:  # plain arrays on this process's default device, for what follows
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), params)
    n = int(sum(np.size(v) for v in jax.tree_util.tree_leaves(params)))
    return FitResult(params, history, done, start, n)
