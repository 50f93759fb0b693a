"""Figures of the evidence estimates against their compute (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from varbayes.inference.evidence.annealing import AISResult
from varbayes.inference.evidence.importance import ISResult


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def is_curve(res: ISResult) -> Any:
    """Mean IS estimate (nats per datapoint) against K, from the nested prefixes, with the
    ELBO as a line; returns the figure."""
    plt = _plt()
    ks = [*sorted(res.prefix), res.k]
    vals = [res.prefix[j].mean() for j in ks[:-1]] + [res.log_px.mean()]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogx(ks, vals, "o-", label="IS (IWAE bound)")
    ax.axhline(res.elbo.mean(), color="grey", ls="--", label="ELBO")
    ax.set_xlabel("importance samples K per datapoint")
    ax.set_ylabel("mean log p(x) (nats)")
    ax.legend()
    ax.set_title("estimate against compute")
    return fig


def ais_curve(results: Mapping[int, AISResult], others: Mapping[str, float]) -> Any:
    """Mean AIS estimate (± its standard error over datapoints) against T, with other
    estimates (name -> nats per datapoint) as lines; returns the figure."""
    plt = _plt()
    Ts = sorted(results)

    def se(v: np.ndarray) -> float:
        return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar(Ts, [results[T].log_px.mean() for T in Ts],
                yerr=[se(results[T].log_px) for T in Ts], fmt="o-", label="AIS")
    for (name, v), ls in zip(others.items(), ("--", ":", "-."), strict=False):
        ax.axhline(v, color="grey", ls=ls, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("intermediate distributions T")
    ax.set_ylabel("mean log p(x) (nats)")
    ax.legend()
    ax.set_title("AIS estimate against compute")
    return fig
