"""The two PPLs' effect handlers behind one interface: what a user's model is, read off a trace.

Every generic algorithm that takes a user's model (``fit``, ``nuts``, the evidence
estimators, the guide draws of :mod:`.workflow.predictive`) goes through these functions, so
the same call means the same thing in both backends:

- :func:`to_backend`: numpy arrays in ``args`` / ``kwargs`` become torch tensors (Pyro) or
  JAX arrays (NumPyro), floats in the backend's default float type;
- :func:`trace`: one run of a model or guide as a list of :class:`Site` (name, type, value as
  numpy, observed or not, plates, scale), the same fields in both backends;
- :func:`check_model`: a model that makes no sample statement in ``backend`` but does in the
  other one is refused with one line naming ``backend=`` (a Pyro model run with the default
  ``backend="numpyro"`` used to return an empty result);
- :func:`with_params`: a model or guide with its ``param`` sites set to given *constrained*
  values (``fit(...).params``), the same in both backends; :func:`isolated` runs Pyro code in
  a fresh param store, so that without ``params=`` both backends use the values the model
  creates itself and Pyro's global store is neither read nor changed;
- :func:`uncondition`: observed sites sampled afresh (prior and posterior predictive);
- :func:`site_dims`: arviz dimension names, the plate's name where a plate stands.

This module and :mod:`.backends` are where the backends' differences live; the generic
algorithms pick an implementation once, at their entry.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.backends import BACKENDS, as_array, check_backend
from varbayes.models.errors import VarbayesError, check


class Site(NamedTuple):
    """One site of a trace, the same in both backends."""

    name: str
    type: str
    """``sample``, ``param``, ``deterministic`` ..."""
    value: Any
    """The backend's array (torch tensor or JAX array)."""
    observed: bool
    """An observed sample site (``obs=`` given), factors excluded."""
    factor: bool
    """A ``factor`` (an observed ``Unit`` site): a term on the log density, not data."""
    fn: Any
    """The distribution (sample sites) or None."""
    plates: tuple[tuple[str, int], ...]
    """(name, dim) of every plate the site sits in; dim counts from the right (-1, -2...)."""
    scale: float | np.ndarray
    """The site's log-density scale (N/M in a subsampled plate), 1.0 if none; an array
    when a ``scale`` handler weighs each element differently."""
    discrete: bool
    """A sample site with discrete support."""


# --------------------------------------------------------------------------- arrays

def to_backend(tree: Any, backend: str) -> Any:
    """``tree`` with every numpy array or scalar, and every array of the other backend, as
    this backend's array.

    Floating arrays take the backend's default float type (float32 unless changed), integer
    and boolean arrays keep their kind; tuples, lists and dicts are walked, anything else
    (Python numbers, None, modules, NamedTuples of networks) passes unchanged.
    """
    check_backend(backend)
    if isinstance(tree, np.ndarray | np.generic):
        return as_array(tree, backend, dtype=None)
    if _foreign(tree, backend):
        return as_array(to_numpy(tree), backend, dtype=None)
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return tuple(to_backend(a, backend) for a in tree)
    if isinstance(tree, list):
        return [to_backend(a, backend) for a in tree]
    if isinstance(tree, dict):
        return {k: to_backend(v, backend) for k, v in tree.items()}
    return tree


def _foreign(a: Any, backend: str) -> bool:
    """True for a torch tensor given to NumPyro or a JAX array given to Pyro."""
    module = type(a).__module__.split(".")[0]
    return module in (("jax", "jaxlib") if backend == "pyro" else ("torch",))


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, JAX array or number as a numpy array (detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


# --------------------------------------------------------------------------- traces

def trace(fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None
          = None, *, backend: str, seed: int = 0) -> list[Site]:
    """Run ``fn(*args, **kwargs)`` once under the backend's trace handler (NumPyro: seeded
    with ``seed``; Pyro: with the global torch generator) and return its sites in order."""
    kwargs = dict(kwargs or {})
    if check_backend(backend) == "pyro":
        import pyro

        tr = pyro.poutine.trace(fn).get_trace(*args, **kwargs)
        return [_site(s) for s in tr.nodes.values() if s["type"] not in ("args", "return")]
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(fn, seed)).get_trace(*args, **kwargs)
    return [_site(s) for s in tr.values()]


def _deterministic(s: dict) -> bool:
    """Pyro records ``pyro.deterministic`` as an observed, masked Delta sample site."""
    return bool((s.get("infer") or {}).get("_deterministic"))


def _site(s: dict) -> Site:
    fn = s.get("fn")
    if _deterministic(s):
        return Site(name=s["name"], type="deterministic", value=s.get("value"),
                    observed=False, factor=False, fn=None, plates=(), scale=1.0,
                    discrete=False)
    is_sample = s["type"] == "sample"
    support = getattr(fn, "support", None) if is_sample else None
    factor = bool(is_sample and s.get("is_observed") and type(fn).__name__ == "Unit")
    scale = s.get("scale")
    return Site(name=s["name"], type=s["type"], value=s.get("value"),
                observed=bool(is_sample and s.get("is_observed") and not factor),
                factor=factor, fn=fn,
                plates=tuple((f.name, int(f.dim)) for f in s.get("cond_indep_stack") or ()
                             if f.dim is not None),
                scale=1.0 if scale is None else _scale(scale),
                discrete=bool(getattr(support, "is_discrete", False)))


def _scale(scale: Any) -> float | np.ndarray:
    """A site's scale as a float, or as an array when it differs per element."""
    a = to_numpy(scale)
    return float(a) if a.size == 1 else np.asarray(a, np.float64)


def latent(sites: Sequence[Site]) -> list[Site]:
    """The latent (unobserved, non-subsample) sample sites."""
    return [s for s in sites if s.type == "sample" and not s.observed and not s.factor
            and getattr(s.fn, "support", None) is not None]


def observed(sites: Sequence[Site]) -> list[Site]:
    """The observed sample sites (data), factors excluded."""
    return [s for s in sites if s.observed]


def params_of(sites: Sequence[Site]) -> list[str]:
    """Names of the param sites."""
    return [s.name for s in sites if s.type == "param"]


def _other(backend: str) -> str:
    return next(b for b in BACKENDS if b != backend)


def _n_sample_sites(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                    backend: str) -> int:
    """Sample sites recorded by one run of ``fn`` in ``backend``; -1 if it raised."""
    try:
        with isolated(backend):
            sites = trace(fn, to_backend(tuple(args), backend),
                          to_backend(dict(kwargs), backend), backend=backend)
    except Exception:
        return -1
    return sum(s.type == "sample" for s in sites)


def check_model(fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any]
                | None = None, *, backend: str, what: str = "model",
                latents: Sequence[Site] | None = None, seed: int = 0) -> list[Site]:
    """Trace ``fn`` in ``backend`` and return its sites; refuse, in one line, a function of
    the other backend (it records no sample site here, or fails here, but records some
    there) and a model with no sample site at all. For a guide (``what="guide"``) pass the
    model's ``latents``: a guide of a model without latents may record nothing."""
    kwargs = dict(kwargs or {})
    error: Exception | None = None
    sites: list[Site] = []
    try:
        with isolated(backend):
            sites = trace(fn, args, kwargs, backend=backend, seed=seed)
    except VarbayesError:
        raise
    except Exception as e:
        error = e
    if error is None and (any(s.type == "sample" for s in sites)
                          or (what == "guide" and not latents)):
        return sites
    other = _other(backend)
    if _n_sample_sites(fn, args, kwargs, other) > 0:
        name = getattr(fn, "__name__", what)
        raise VarbayesError(
            f"{what} {name!r} is a {_label(other)} model (it makes {other}.sample "
            f"statements), but backend={backend!r}: pass backend={other!r}")
    if error is not None:
        raise error
    raise VarbayesError(f"{what} {getattr(fn, '__name__', what)!r} makes no {backend}.sample "
                        "statement: nothing to infer")


class Pair(NamedTuple):
    """A checked model+guide pair, ``params`` substituted, and one trace of each."""

    model: Callable[..., Any]
    guide: Callable[..., Any]
    model_sites: list[Site]
    guide_sites: list[Site]


def checked_pair(model: Callable[..., Any], guide: Callable[..., Any], args: Sequence[Any],
                 kwargs: Mapping[str, Any], *, backend: str,
                 params: Mapping[str, Any] | None = None, seed: int = 0) -> Pair:
    """Check a model+guide pair on one call (:func:`check_model`, :func:`check_params`) and
    return it with ``params`` substituted, with the sites of both traces. Run it, and what
    uses the pair, inside :func:`isolated`; ``seed`` seeds the NumPyro traces."""
    msites = check_model(model, args, kwargs, backend=backend, seed=seed)
    gsites = check_model(guide, args, kwargs, backend=backend, what="guide",
                         latents=latent(msites), seed=seed)
    check_params(params, msites, gsites)
    return Pair(with_params(model, params, backend=backend, sites=msites),
                with_params(guide, params, backend=backend, sites=gsites), msites, gsites)


def to_batches(batches: Iterable[tuple[Sequence[Any], Mapping[str, Any]]], backend: str,
               what: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """``(args, kwargs)`` batches with their arrays converted by :func:`to_backend`; at
    least one is required (``what`` names the caller in the error)."""
    out = [(to_backend(tuple(a), backend), to_backend(dict(kw), backend)) for a, kw in batches]
    check(bool(out), f"{what} got no batches of data")
    return out


def _label(backend: str) -> str:
    return {"pyro": "Pyro", "numpyro": "NumPyro"}[backend]


# --------------------------------------------------------------------------- handlers

@contextlib.contextmanager
def isolated(backend: str) -> Iterator[None]:
    """Pyro: run the block in a fresh, empty param store and restore the global one after
    (so ``pyro.param(name, init)`` returns ``init``, as in NumPyro). NumPyro: nothing.

    A ``PyroModule`` (Pyro's AutoGuides, ``pyro.nn`` modules) keeps its own parameter
    tensors and registers their *current* values, where a NumPyro AutoGuide starts from its
    initial ones: pass ``params=`` to make the two mean the same."""
    if check_backend(backend) != "pyro":
        yield
        return
    import pyro

    with pyro.get_param_store().scope():
        yield


def with_params(fn: Callable[..., Any], params: Mapping[str, Any] | None, *, backend: str,
                sites: Sequence[Site] | None = None) -> Callable[..., Any]:
    """``fn`` with its param sites set to ``params`` (name -> constrained value, e.g.
    ``fit(...).params``); None returns ``fn``. numpy values are converted. With ``sites``
    (a trace of ``fn``) only the names of its own param sites are substituted."""
    values = site_params(params, backend=backend, sites=sites)
    if not values:
        return fn
    if check_backend(backend) == "pyro":
        import pyro

        return pyro.poutine.substitute(fn, data=values)
    from numpyro import handlers

    return handlers.substitute(fn, data=values)


def site_params(params: Mapping[str, Any] | None, *, backend: str,
                sites: Sequence[Site] | None = None) -> dict[str, Any]:
    """``params`` as arrays of ``backend`` (numpy values and numbers converted), only the
    names of the param sites in ``sites`` when given; {} for None. What
    :func:`with_params` substitutes, for a caller that substitutes inside a compiled
    function (where the values are traced arguments, not constants)."""
    if sites is not None and params:
        params = {k: v for k, v in params.items() if k in set(params_of(sites))}
    return {k: to_backend(np.asarray(v) if isinstance(v, int | float) else v, backend)
            for k, v in (params or {}).items()}


def pair_params(params: Mapping[str, Any] | None, pair: Pair, backend: str
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`site_params` of the model's and of the guide's param sites of a checked pair,
    for :func:`substituted` inside a compiled function."""
    return (site_params(params, backend=backend, sites=pair.model_sites),
            site_params(params, backend=backend, sites=pair.guide_sites))


def substituted(model: Callable[..., Any], guide: Callable[..., Any],
                params: tuple[dict[str, Any], dict[str, Any]]
                ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """NumPyro ``model`` and ``guide`` with the values of :func:`pair_params` substituted
    (traced arrays inside a compiled function); each unchanged where it has none."""
    from numpyro import handlers

    return tuple(handlers.substitute(fn, data=v) if v else fn  # type: ignore[return-value]
                 for fn, v in zip((model, guide), params, strict=True))


def compiled_once(factory: Callable[..., Any], *key: Any) -> Any:
    """``factory(*key)`` through its ``functools.lru_cache``, so that a compiled function
    built for a model and guide is reused by the next call with the same ones; a key that
    cannot be hashed (an unhashable model object) builds a fresh one for this call."""
    try:
        return factory(*key)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        return factory.__wrapped__(*key)


def check_params(params: Mapping[str, Any] | None, *site_lists: Sequence[Site]) -> None:
    """Refuse ``params`` names that are no param site of the model or the guide."""
    if not params:
        return
    known = {n for sites in site_lists for n in params_of(sites)}
    unknown = sorted(set(params) - known)
    check(not unknown, f"params= names {unknown}, which are not param sites of the model or "
                       f"guide (those are {sorted(known)}): pass fit(...).params of this pair")


def uncondition(fn: Callable[..., Any], *, backend: str) -> Callable[..., Any]:
    """``fn`` with every observed sample site (factors excepted) drawn from its
    distribution instead of fixed to the data: the prior or posterior predictive. The draw
    has the data's shape even where only broadcasting against the data gave the site its
    batch shape (``sample("y", Normal(mu, s), obs=y)`` outside a plate)."""

    def batch_shape(msg: dict) -> tuple[int, ...]:
        shape = tuple(msg["value"].shape)
        return shape[:len(shape) - len(msg["fn"].event_shape)]

    def release(msg: dict) -> None:
        if (msg["type"] == "sample" and msg.get("is_observed")
                and type(msg["fn"]).__name__ != "Unit" and not _deterministic(msg)):
            shape = batch_shape(msg)
            if tuple(msg["fn"].batch_shape) != shape:
                msg["fn"] = msg["fn"].expand(shape)
            msg["is_observed"] = False
            msg["value"] = None

    if check_backend(backend) == "pyro":
        from pyro.poutine.messenger import Messenger as PyroMessenger

        class PyroUncondition(PyroMessenger):
            def _pyro_sample(self, msg: dict) -> None:
                release(msg)

        return PyroUncondition()(fn)
    from numpyro.primitives import Messenger

    class Uncondition(Messenger):
        def process_message(self, msg: dict) -> None:
            release(msg)

    return Uncondition(fn)


# --------------------------------------------------------------------------- signatures

def accepts(fn: Callable[..., Any], keyword: str) -> bool:
    """True when ``fn`` takes the keyword argument ``keyword`` (or ``**kwargs``)."""
    try:
        ps = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins, some C callables: assume yes
        return True
    return any(p.kind is p.VAR_KEYWORD or (p.name == keyword and p.kind in (
        p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) for p in ps)


# --------------------------------------------------------------------------- arviz dims

def site_dims(site: Site) -> list[str]:
    """arviz dimension names of ``site``'s value (without chain and draw): a plate's name for
    a batch dimension where the plate stands, else ``<site>_dim_<i>``."""
    shape = tuple(np.shape(to_numpy(site.value)))
    event = len(getattr(site.fn, "event_shape", ()) or ())
    batch = len(shape) - event
    by_dim = dict((d, n) for n, d in site.plates)
    return [by_dim.get(i - batch, f"{site.name}_dim_{i}") if i < batch
            else f"{site.name}_dim_{i}" for i in range(len(shape))]


def dims_of(sites: Sequence[Site], user: Mapping[str, Sequence[str]] | None = None
            ) -> dict[str, list[str]]:
    """Site name -> arviz dims for every sample site with at least one dimension; ``user``
    entries (the ``dims=`` a user passes) replace the inferred ones."""
    out = {s.name: site_dims(s) for s in sites
           if s.type in ("sample", "deterministic") and not s.factor}
    out = {k: v for k, v in out.items() if v}
    out.update({k: list(v) for k, v in (user or {}).items()})
    return out
