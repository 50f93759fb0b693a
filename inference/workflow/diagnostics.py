"""arviz workflow: guide draws as InferenceData, summaries, a diagnostics gate, model
comparison with PSIS-LOO / WAIC, and the standard plots.

Everything takes and returns plain :class:`arviz.InferenceData`, so SVI and NUTS results
compare on equal footing.
"""

from __future__ import annotations

import math
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
    """The diagnostics gate: r̂ ≤ 1.01 and bulk ESS ≥ 400 everywhere, no divergences.

    An undefined r̂ or ESS (NaN: arviz has no r̂ for one chain, nor either for a handful of
    draws) fails the gate: nothing shows convergence."""
    import arviz as az

    check(not ("sample_stats" in idata.groups() and "log_weight" in idata.sample_stats),
          "gate() is the MCMC convergence gate; these are independent draws of a guide, for "
          "which r̂ and ESS say nothing about q: use q_khat() (the PSIS k̂ of q)")
    s = az.summary(idata, var_names=var_names, kind="diagnostics")
    bad = s[~(s["r_hat"] <= rhat_max) | ~(s["ess_bulk"] >= ess_min)].index
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
    """Datapoints with Pareto k̂ > ``good_k``, where the PSIS estimate is unreliable."""
    max_k: float
    warning: str
    """Empty when every k̂ ≤ ``good_k`` and arviz warned of nothing; else what is wrong
    (arviz's own warnings included) and what to do about it."""
    good_k: float = 0.7
    """arviz's sample-size-aware threshold min(1 − 1/log10(S), 0.7) for S draws."""


def good_k(n_draws: int) -> float:
    """The Pareto k̂ threshold for ``n_draws`` draws: min(1 − 1/log10(S), 0.7) (Vehtari et
    al. 2024, "Pareto smoothed importance sampling"; arviz's ``good_k``)."""
    return float(min(1.0 - 1.0 / math.log10(n_draws), 0.7)) if n_draws > 10 else 0.0


def _caught(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The distinct messages of recorded warnings, FutureWarnings about arviz's refactor
    left out."""
    out: list[str] = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, FutureWarning) or text in out:
            continue
        out.append(text)
    return out


def loo(idata: Any) -> LooReport:
    """PSIS-LOO from the ``log_likelihood`` group, judged by arviz's sample-size-aware k̂
    threshold ``good_k`` (not a fixed 0.7), with arviz's warnings passed into the report."""
    import arviz as az

    if "log_likelihood" not in idata.groups():
        raise VarbayesError("this InferenceData has no log_likelihood group: PSIS-LOO needs "
                            "pointwise log-likelihoods (sample with observed sites)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k)
    threshold = float(getattr(res, "good_k", 0.7))
    n_high = int((k > threshold).sum())
    notes = _caught(caught)
    if n_high:
        notes.insert(0, f"{n_high} of {k.size} datapoints have Pareto k̂ > {threshold:.2f} "
                        f"(the threshold for {int(res.n_samples)} draws): PSIS-LOO is "
                        "unreliable there; draw more, refit without them (exact LOO) or use "
                        "K-fold CV")
    return LooReport(float(res.elpd_loo), float(res.se), float(res.p_loo), n_high,
                     float(k.max()), "; ".join(notes), threshold)


class QCheck(NamedTuple):
    """PSIS diagnostic of a variational q against the model (Yao, Vehtari, Simpson & Gelman
    2018, "Yes, but did it work?"): the Pareto k̂ of the importance ratios p(y, θ)/q(θ)."""

    khat: np.ndarray
    """k̂ per datapoint (per-datapoint latents) or one value (global latents). Below 0.5 q
    is close to the posterior; 0.5 to 0.7 usable, better refined by importance sampling;
    above 0.7 q is far from it and its estimates should not be trusted."""
    good_k: float
    """The threshold for this many draws, min(1 − 1/log10(S), 0.7)."""
    n_draws: int
    """S, the draws of q behind each k̂."""
    verdict: str
    """One line saying what k̂ means here."""


#: Fewest draws of q from which :func:`q_khat` fits a Pareto tail.
Q_KHAT_MIN_DRAWS = 10


def q_khat(log_weights: Any) -> QCheck:
    """The PSIS k̂ of q from log weights log p(y, θ_s) − log q(θ_s) of S independent draws
    θ_s ~ q: shape (S,) for one set of latents, or (S, M) for M datapoints' own latents
    (one k̂ each). Also takes the InferenceData of :func:`.predictive.guide_draws`, whose
    ``sample_stats.log_weight`` is the joint weight of all latents: one k̂ for the whole q."""

    if hasattr(log_weights, "groups"):
        check("sample_stats" in log_weights.groups()
              and "log_weight" in log_weights.sample_stats,
              "q_khat needs sample_stats.log_weight: the InferenceData of guide_draws")
        lw = np.asarray(log_weights.sample_stats["log_weight"].values, np.float64)
        lw = lw.reshape(-1, *lw.shape[2:])
    else:
        lw = np.asarray(log_weights, np.float64)
    check(lw.ndim in (1, 2) and lw.shape[0] >= Q_KHAT_MIN_DRAWS,
          f"q_khat needs log weights (S,) or (S, M) with S >= {Q_KHAT_MIN_DRAWS} draws, got "
          f"shape {lw.shape}")
    check(bool(np.isfinite(lw).all()), "q_khat got non-finite log weights: q puts mass where "
                                       "the model has none (check the guide's supports)")
    from varbayes.inference.evidence.importance import pareto_k

    lw = lw if lw.ndim == 2 else lw[:, None]
    k = np.atleast_1d(pareto_k(lw))
    # equal weights (q is the posterior, up to float32 rounding): no tail to fit, k̂ = 0
    k[np.ptp(lw, axis=0) < 1e-4] = 0.0
    S, threshold, worst = lw.shape[0], good_k(lw.shape[0]), float(np.max(k))
    if worst <= min(0.5, threshold):
        verdict = f"max k̂ = {worst:.2f} ≤ 0.5: q is close to the posterior"
    elif worst <= threshold:
        verdict = (f"max k̂ = {worst:.2f} in (0.5, {threshold:.2f}]: q is usable for means; "
                   "refine its estimates by importance sampling")
    else:
        n_bad = int((k > threshold).sum())
        verdict = (f"k̂ > {threshold:.2f} on {n_bad} of {k.size} (max {worst:.2f}): q is far "
                   "from the posterior there; do not trust its estimates (richer guide, or "
                   "MCMC)")
    return QCheck(k, threshold, S, verdict)


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


def plot_ppc(idata: Any, path: str | os.PathLike[str], num_pp_samples: int = 50) -> Path:
    """``az.plot_ppc``: the observed data's density against ``num_pp_samples`` posterior
    predictive draws, one panel per observed site, written as a PNG to ``path``.

    Data and predictive draws whose values are all whole numbers (counts, binary pixels)
    are drawn as histograms, as arviz does for integer data.
    """
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check("posterior_predictive" in idata.groups(),
          "plot_ppc needs a posterior_predictive group: sample with predictive=True")
    data = idata
    obs, pp = idata.observed_data, idata.posterior_predictive
    if all(np.all(np.mod(obs[v].values, 1) == 0) for v in obs.data_vars) and all(
            np.all(np.mod(pp[v].values, 1) == 0) for v in pp.data_vars):
        data = idata.copy()
        for group in ("observed_data", "posterior_predictive"):
            ds = getattr(data, group)
            for v in ds.data_vars:
                ds[v] = ds[v].astype(np.int64)
    n = int(idata.posterior_predictive.sizes["chain"] * idata.posterior_predictive.sizes["draw"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_ppc(data, num_pp_samples=min(num_pp_samples, n), random_seed=0)
    fig = np.asarray(axes).ravel()[0].get_figure()
    path = save_figure(fig, path)
    plt.close(fig)
    return path


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
