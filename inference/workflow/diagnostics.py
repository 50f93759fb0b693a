"""arviz workflow: guide draws as InferenceData, summaries, a diagnostics gate, model
comparison with PSIS-LOO / WAIC, and the standard plots.

Everything takes and returns plain :class:`arviz.InferenceData`, so SVI and NUTS results
compare on equal footing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.io import save_figure
from varbayes.models.errors import VarbayesError, check


class Gate(NamedTuple):
    """Pass/fail of the convergence gate: r̂ ≤ ``rhat_max`` and bulk ESS ≥ ``ess_min``."""

    passed: bool
    """True when every variable meets both thresholds and nothing diverged."""
    max_rhat: float
    """Largest rank-normalized split r̂ over all scalar components."""
    min_ess_bulk: float
    """Smallest bulk effective sample size over all scalar components."""
    divergences: int
    """Divergent transitions after warmup (0 for guide draws)."""
    failing: tuple[str, ...]
    """Variables that break a threshold."""


def from_draws(draws: Mapping[str, Any], log_likelihood: Mapping[str, Any] | None = None,
               observed_data: Mapping[str, Any] | None = None):
    """InferenceData from draws shaped (chain, draw, *site_shape), e.g. from an SVI guide.

    Parameters
    ----------
    draws : site name -> array (chain, draw, ...). Draw independent samples from the guide
        in several "chains" so that r̂ and ESS are defined and comparable with MCMC.
    log_likelihood : optional observed-site name -> pointwise log p(y_i | draw), (chain, draw, N).
    observed_data : optional observed-site name -> data.
    """
    import arviz as az

    posterior = {k: np.asarray(v) for k, v in draws.items()}
    for k, v in posterior.items():
        check(v.ndim >= 2, f"draws['{k}'] must be (chain, draw, ...), got shape {v.shape}")
    kw: dict[str, Any] = {"posterior": posterior}
    if log_likelihood:
        kw["log_likelihood"] = {k: np.asarray(v) for k, v in log_likelihood.items()}
    if observed_data:
        kw["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    return az.from_dict(**kw)


def gate(idata: Any, var_names: Sequence[str] | None = None, rhat_max: float = 1.01,
         ess_min: float = 400.0) -> Gate:
    """The diagnostics gate: r̂ ≤ 1.01 and bulk ESS ≥ 400 everywhere, no divergences."""
    import arviz as az

    s = az.summary(idata, var_names=var_names, kind="diagnostics")
    bad = s[(s["r_hat"] > rhat_max) | (s["ess_bulk"] < ess_min)].index
    failing = tuple(sorted({str(i).split("[")[0] for i in bad}))
    div = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        div = int(idata.sample_stats["diverging"].values.sum())
    return Gate(not failing and div == 0, float(s["r_hat"].max()), float(s["ess_bulk"].min()),
                div, failing)


def summary(idata: Any, var_names: Sequence[str] | None = None):
    """``az.summary`` (means, sds, HDIs, MCSE, ESS, r̂) as a pandas DataFrame."""
    import arviz as az

    return az.summary(idata, var_names=var_names)


class LooReport(NamedTuple):
    """PSIS-LOO of one model, in nats (expected log pointwise predictive density)."""

    elpd_loo: float
    se: float
    p_loo: float
    n_high_k: int
    """Datapoints with Pareto k̂ > 0.7, where the PSIS estimate is unreliable."""
    max_k: float
    warning: str
    """Empty when every k̂ ≤ 0.7; else what to do about it."""


def loo(idata: Any) -> LooReport:
    """PSIS-LOO from the ``log_likelihood`` group, with the Pareto k̂ warning surfaced."""
    import arviz as az

    if "log_likelihood" not in idata.groups():
        raise VarbayesError("this InferenceData has no log_likelihood group: PSIS-LOO needs "
                            "pointwise log-likelihoods (sample with observed sites)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k)
    n_high = int((k > 0.7).sum())
    msg = (f"{n_high} of {k.size} datapoints have Pareto k̂ > 0.7: PSIS-LOO is unreliable "
           "there; refit without them (exact LOO) or use K-fold CV") if n_high else ""
    return LooReport(float(res.elpd_loo), float(res.se), float(res.p_loo), n_high,
                     float(k.max()), msg)


def compare(models: Mapping[str, Any], ic: str = "loo"):
    """``az.compare`` of model variants (name -> InferenceData), best first."""
    import arviz as az

    check(ic in ("loo", "waic"), f"ic must be 'loo' or 'waic', got {ic!r}")
    check(len(models) >= 2, f"compare needs at least two models, got {len(models)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(dict(models), ic=ic)


def plot_diagnostics(idata: Any, out: str | os.PathLike[str], var_names: Sequence[str] | None
                     = None, prefix: str = "", pair_coords: Mapping[str, Any] | None = None
                     ) -> list[Path]:
    """Trace, rank, pair (2+ components), forest and (MCMC) energy plots as PNGs in ``out``.

    ``pair_coords`` selects what the pair plot shows (e.g. ``{"z_dim_0": [0, 1]}``): its size
    grows with the square of the number of components.
    """
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    out = Path(out)
    paths = []
    kinds = {"trace": az.plot_trace, "rank": az.plot_rank, "pair": az.plot_pair,
             "forest": az.plot_forest}
    names = list(var_names) if var_names else list(idata.posterior.data_vars)
    n_scalars = sum(int(np.prod(idata.posterior[k].shape[2:])) for k in names)
    if n_scalars < 2:  # a pair plot needs two components
        del kinds["pair"]
    if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
        kinds["energy"] = az.plot_energy
    for name, fn in kinds.items():
        kw = {} if name == "energy" else {"var_names": var_names}
        if name == "pair" and pair_coords:
            kw["coords"] = dict(pair_coords)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = fn(idata, **kw)
        fig = np.asarray(axes).ravel()[0].get_figure()
        paths.append(save_figure(fig, out / f"{prefix}{name}.png"))
    plt.close("all")
    return paths


def plot_forest_comparison(fits: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """One forest plot of several fits (name -> InferenceData), e.g. NUTS against an SVI
    guide's draws, written as a PNG to ``path``."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_forest(list(fits.values()), model_names=list(fits), combined=True,
                              figsize=(6, 4))
    return save_figure(np.asarray(axes).ravel()[0].get_figure(), path)
