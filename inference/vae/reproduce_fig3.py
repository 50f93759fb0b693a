"""The AEVB paper's figure 3, reproduced: the marginal likelihood against training samples
evaluated, AEVB against wake-sleep and Monte Carlo EM, for a small and a large training set.

Protocol (Kingma & Welling 2013, section 5 and the appendix): N_z = 3 latents and one hidden
layer of 100 tanh units in the encoder and the decoder, minibatches M = 100, Adagrad, and
weight decay as an N(0, I) prior on the decoder weights. AEVB trains on the ELBO (estimator
B), wake-sleep with its wake and sleep phases (:mod:`varbayes.inference.vi.wake_sleep`), and
MCEM (:mod:`varbayes.inference.mcmc.mcem`) with one HMC transition of 10 leapfrog steps per
datapoint and visit, its step size adapted toward 90% acceptance, then 5 weight updates. All
three learn the same decoder. Each is scored during training by the appendix-D estimator
(:mod:`varbayes.inference.evidence.hmc`) on the first ``n_eval`` points of its training set
and of the test set.

Each curve gets an equal share of the wall-clock budget. Three quarters of the share trains
(data loading, compilation and each run's figures included); the estimates are taken when
the training time reaches 1/2^(E-1), ..., 1/2, 1 of that (E evaluations, evenly spaced on
the paper's log axis). A segment that overruns the next times skips their estimates. The
scoring's own time is set by E and the points scored; the defaults take about the remaining
quarter on 2 CPU cores.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.evidence.hmc import HMCEvidenceOptions, hmc_evidence
from varbayes.inference.io import atomic_write_bytes, save_figure
from varbayes.inference.vae.reproduce import (
    BATCH,
    PAPER_SAMPLES,
    check_budget,
    flat_metrics,
    key,
    paper_spec,
    samples_seen,
)
from varbayes.inference.vae.run import export_arrays, load_run, run_batches
from varbayes.inference.vae.train import train_run, train_transform
from varbayes.models.errors import check

#: The paper's training-set sizes, latent size and hidden width.
PAPER_TRAIN_SIZES = (1000, 50000)
PAPER_LATENT = 3
HIDDEN = 100
DATASETS = ("mnist", "digits")
METHODS = ("AEVB", "wake-sleep", "MCEM")
#: The share of each curve's budget spent training (the rest scores it).
TRAIN_FRACTION = 0.75
#: The most estimates per curve (the first comes after 1/2^(E-1) of the training time).
MAX_EVALS = 12
#: Points scored from the training set and from the test set by default.
N_EVAL = 500
#: The appendix-D estimator as scored here: 2 chains, 100 adapting transitions, 100 draws
#: (50 fit the Gaussian, 50 score it), 10 leapfrog steps. Each chain starts at the best of
#: 1,000 guide draws by log p(x, z): MCEM has no encoder, and chains started at single
#: draws of its untrained one missed the posterior (64 nats too low on 1,000 images).
EVAL_HMC = HMCEvidenceOptions(n_samples=100, n_warmup=100, chains=2, n_leapfrog=10,
                              init_draws=1000)


class Fig3Options(NamedTuple):
    """What ``varbayes reproduce aevb-fig3`` runs."""

    budget: float = 3600.0
    """Wall-clock seconds for every curve together, scoring included."""
    datasets: tuple[str, ...] = ("mnist",)
    train_sizes: tuple[int, ...] = PAPER_TRAIN_SIZES
    latents: tuple[int, ...] = (PAPER_LATENT,)
    evals: int = 5
    """Estimates per curve."""
    n_eval: int | None = None
    """Points of the training set and of the test set that each estimate scores; None:
    :data:`N_EVAL`, or fewer where the test set or the smallest training set is smaller."""
    lr: float = 0.02
    """Adagrad step size of all three methods."""
    seed: int = 0
    data_dir: str | None = None


class Curve(NamedTuple):
    """One method's estimates of log p(x) during training, nats per datapoint."""

    samples: list[float]
    """Training samples evaluated at each estimate."""
    train: list[float]
    test: list[float]
    train_se: list[float]
    test_se: list[float]
    train_seconds: float
    eval_seconds: float
    final_test_points: list[float]
    """The last estimate per scored test point (the same points for every method)."""


def plan(o: Fig3Options) -> tuple[Fig3Options, list[tuple[str, int, int]]]:
    """Check every option before any work. Returns the options with ``n_eval`` resolved and
    (dataset, training-set size, N_z) of every panel."""
    from varbayes.inference.data import datasets

    check_budget(o.budget, o.lr)
    check(len(o.datasets) > 0, "--datasets must name at least one of " + ", ".join(DATASETS))
    check(len(o.train_sizes) > 0 and len(o.latents) > 0,
          "--train-sizes and --latents must name at least one value each")
    for flag, values in (("--datasets", o.datasets), ("--train-sizes", o.train_sizes),
                         ("--latents", o.latents)):
        check(len(set(values)) == len(values), f"{flag} repeats a value: "
                                               f"{','.join(map(str, values))}")
    check(isinstance(o.evals, int) and 1 <= o.evals <= MAX_EVALS,
          f"--evals must be in [1, {MAX_EVALS}], got {o.evals}")
    check(o.n_eval is None or (isinstance(o.n_eval, int) and o.n_eval >= 2),
          f"--n-eval must be >= 2, got {o.n_eval}")
    out, n_eval = [], N_EVAL if o.n_eval is None else o.n_eval
    for d in o.datasets:
        check(d in DATASETS, f"--datasets: {d!r} is not one of {', '.join(DATASETS)} (figure 3 "
                             "is on binary images)")
        data = datasets.load(d, o.data_dir)
        n_avail, n_test = len(data.x_train), len(data.x_test)
        check(o.n_eval is None or o.n_eval <= n_test,
              f"--n-eval {o.n_eval} is more than {d}'s {n_test} test points: pass --n-eval "
              f"{n_test} or fewer")
        n_eval = min(n_eval, n_test)
        for n in o.train_sizes:
            check(BATCH <= n <= n_avail, f"--train-sizes: {n} is not in [{BATCH}, {n_avail}], "
                                         f"the minibatch size and {d}'s training set (the "
                                         "default is the paper's 1000,50000 on MNIST)")
            check(o.n_eval is None or o.n_eval <= n,
                  f"--n-eval {o.n_eval} is more than the {n} training points of "
                  f"--train-sizes: pass --n-eval {n} or fewer")
            n_eval = min(n_eval, n)
            for k in o.latents:
                check(k >= 1, f"--latents must be >= 1, got {k}")
                out.append((d, int(n), int(k)))
    return o._replace(n_eval=n_eval), out


def eval_times(train_seconds: float, evals: int) -> list[float]:
    """Cumulative training seconds at which to score: T/2^(E-1), ..., T/2, T."""
    return [train_seconds * 2.0 ** (k - evals + 1) for k in range(evals)]


def segments(train_seconds: float, evals: int, train: Callable[[float, bool], None]
             ) -> Iterator[float]:
    """Call ``train(time_limit, resume)`` until the training time reaches each of
    :func:`eval_times` in turn, yielding the training seconds spent after each call (when to
    score). A call that overruns later times skips them; the last yield is at or past
    ``train_seconds``."""
    times, spent, k = eval_times(train_seconds, evals), 0.0, 0
    while k < len(times):
        t0 = time.perf_counter()
        train(times[k] - spent, spent > 0)
        spent += time.perf_counter() - t0
        yield spent
        while k < len(times) and times[k] <= spent:
            k += 1


def log_evidence(vae: Any, x: np.ndarray, seed: int) -> np.ndarray:
    """The appendix-D estimate of log p(x_i) (N,) for the points x (N, D), nats; the chains
    start at the guide's draws."""
    from varbayes.models.vae import numpyro_model

    r = hmc_evidence(numpyro_model.model, numpyro_model.guide,
                     run_batches(vae, "numpyro", x, None, 500), EVAL_HMC, seed=seed)
    return np.asarray(r.log_px, np.float64)


def mean_se(v: np.ndarray) -> tuple[float, float]:
    """The mean of v and its standard error."""
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


class _Scores:
    """Collects one curve's estimates."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float, float]] = []
        self.eval_seconds = 0.0
        self.last_test = np.zeros(0)
        self.train_seconds = 0.0

    def add(self, train_seconds: float, samples: float, vae: Any, x_train: np.ndarray,
            x_test: np.ndarray, seed: int) -> None:
        """Score ``vae`` after ``train_seconds`` of training and ``samples`` evaluated."""
        self.train_seconds = train_seconds
        t0 = time.perf_counter()
        tr, tr_se = mean_se(log_evidence(vae, x_train, seed))
        self.last_test = log_evidence(vae, x_test, seed + 1)
        te, te_se = mean_se(self.last_test)
        self.eval_seconds += time.perf_counter() - t0
        self.rows.append((samples, tr, te, tr_se, te_se))

    def curve(self) -> Curve:
        cols = [list(map(float, c)) for c in zip(*self.rows, strict=True)]
        return Curve(*cols, self.train_seconds, self.eval_seconds,
                     [float(v) for v in self.last_test])


def vae_curve(out: Path, dataset: str, n_train: int, latent: int, method: str,
              o: Fig3Options, train_seconds: float) -> Curve:
    """Train AEVB or wake-sleep into the run folder ``out`` in segments, scoring after each."""
    spec = paper_spec(dataset, latent, HIDDEN, method, o.lr, o.seed, o.data_dir,
                      n_train=n_train, n_test=o.n_eval)
    out.mkdir(parents=True, exist_ok=True)
    scores, done = _Scores(), {}

    def train(limit: float, resume: bool) -> None:
        done["epochs"] = train_run(spec._replace(time_limit=limit, resume=resume), out).epochs

    for k, spent in enumerate(segments(train_seconds, o.evals, train)):
        run = load_run(out, o.data_dir)
        scores.add(spent, samples_seen(done["epochs"], n_train), run.vae,
                   run.data.x_train_eval[:o.n_eval], run.data.x_test[:o.n_eval], o.seed + 2 * k)
    return scores.curve()


def mcem_curve(out: Path, aevb_run: Path, o: Fig3Options, train_seconds: float) -> Curve:
    """Monte Carlo EM on the decoder of the AEVB run ``aevb_run`` (its configuration, data
    and seed, freshly initialized), in segments, scoring after each. MCEM has no encoder:
    the estimator's chains start at the untrained encoder's draws (close to the prior) and
    its adapting transitions carry them to the posterior."""
    import equinox as eqx

    from varbayes.inference.mcmc.mcem import MCEMOptions, mcem
    from varbayes.models.vae import numpyro_model

    run = load_run(aevb_run, o.data_dir)
    config, data = run.vae.config, run.data
    vae0 = numpyro_model.build(config, seed=o.seed)
    encoder = {"encoder$params": eqx.filter(vae0.encoder, eqx.is_inexact_array)}

    def trained(params: dict[str, Any]) -> Any:
        return numpyro_model.with_params(vae0, {**params, **encoder})

    options = MCEMOptions(epochs=1_000_000, batch_size=BATCH, optimizer="adagrad", lr=o.lr,
                          m_steps=5, hmc_steps=1, n_leapfrog=10, target_accept=0.9,
                          seed=o.seed)
    out.mkdir(parents=True, exist_ok=True)
    scores, done = _Scores(), {}

    def train(limit: float, resume: bool) -> None:
        done["r"] = mcem(functools.partial(numpyro_model.model, vae0), (data.x_train, None),
                         options=options._replace(time_limit=limit),
                         transform=train_transform(config, data.binarize == "dynamic"),
                         checkpoint=out / "checkpoint.npz", resume=resume,
                         export=lambda p: export_arrays(numpyro_model.weights(trained(p))))

    for k, spent in enumerate(segments(train_seconds, o.evals, train)):
        r = done["r"]
        scores.add(spent, samples_seen(r.epochs, len(data.x_train)), trained(r.params),
                   data.x_train_eval[:o.n_eval], data.x_test[:o.n_eval], o.seed + 2 * k)
    atomic_write_bytes(out / "history.json", (json.dumps(r.history) + "\n").encode())
    return scores.curve()


def value_at(c: Curve, samples: float) -> float | None:
    """The test estimate at ``samples``, interpolated linearly in log samples between the
    curve's estimates; None outside them."""
    if not c.samples[0] <= samples <= c.samples[-1]:
        return None
    return float(np.interp(np.log(samples), np.log(c.samples), c.test))


def _label(r: dict[str, Any]) -> str:
    return f"{r['dataset']} N_train={r['n_train']} N_z={r['latent']}"


def _compare(d: float, se: float) -> str:
    """A paired difference AEVB − other against twice its standard error."""
    if d > 2 * se:
        return "AEVB ahead"
    return "within noise" if d >= -2 * se else "AEVB behind"


def verdicts(curves: dict[tuple[str, int, int], dict[str, Curve]]) -> list[dict[str, Any]]:
    """Per panel: the final estimates, AEVB against each other method paired over the same
    test points, the methods at the samples the slowest one reached, the train − test gaps
    and how far along the paper's x-axis each got."""
    rows = []
    for (dataset, n, latent), c in curves.items():
        row: dict[str, Any] = {"dataset": dataset, "n_train": n, "latent": latent}
        for m, cv in c.items():
            row.update({f"{key(m)}_train": cv.train[-1], f"{key(m)}_test": cv.test[-1],
                        f"{key(m)}_test_se": cv.test_se[-1],
                        f"{key(m)}_samples": cv.samples[-1],
                        f"{key(m)}_gap": cv.train[-1] - cv.test[-1],
                        f"{key(m)}_seconds": cv.train_seconds + cv.eval_seconds,
                        f"{key(m)}_fraction_of_paper_axis":
                            cv.samples[-1] / PAPER_SAMPLES[dataset]})
        common = min(cv.samples[-1] for cv in c.values())
        row["common_samples"] = common
        for m, cv in c.items():
            row[f"{key(m)}_test_at_common"] = value_at(cv, common)
        row["best_test"] = max(c, key=lambda m: c[m].test[-1])
        row["positive_estimates"] = [  # impossible for the binary images scored here
            f"{m} {part} {v:+.2f} at {s:.3g} samples" for m, cv in c.items()
            for part, vals in (("train", cv.train), ("test", cv.test))
            for s, v in zip(cv.samples, vals, strict=True) if v > 0]
        for m in METHODS[1:]:  # paired over the same test points
            d, se = mean_se(np.asarray(c["AEVB"].final_test_points)
                            - np.asarray(c[m].final_test_points))
            row.update({f"aevb_minus_{key(m)}": d, f"aevb_minus_{key(m)}_se": se,
                        f"aevb_vs_{key(m)}": _compare(d, se)})
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _scaling(rows: list[dict[str, Any]]) -> str:
    """Claim 3: AEVB − MCEM at each training-set size of a (dataset, N_z)."""
    parts = []
    for d, z in dict.fromkeys((r["dataset"], r["latent"]) for r in rows):
        rs = sorted((r for r in rows if (r["dataset"], r["latent"]) == (d, z)),
                    key=lambda r: r["n_train"])
        sizes = "; ".join(f"N_train={r['n_train']}: AEVB − MCEM {r['aevb_minus_mcem']:+.2f} ± "
                          f"{r['aevb_minus_mcem_se']:.2f} nats, AEVB evaluated "
                          f"{r['aevb_samples'] / r['mcem_samples']:.2g}× MCEM's samples"
                          for r in rs)
        if len(rs) < 2:
            parts.append(f"{d} N_z={z}: one training-set size only ({sizes}), so the claim "
                         "is not checked; pass two --train-sizes")
            continue
        small, big = rs[0], rs[-1]
        grew = big["aevb_minus_mcem"] > small["aevb_minus_mcem"]
        parts.append(f"{d} N_z={z}: {sizes}. AEVB's lead over MCEM "
                     + ("grows" if grew else "does not grow")
                     + " from the smallest to the largest training set")
    return "; ".join(parts)


def report(rows: list[dict[str, Any]], budget: float, wall: float) -> str:
    """``report.md``: our curves beside the paper's claims, point by point."""
    keys = [key(m) for m in METHODS]
    lines = ["# Figure 3 of Kingma & Welling (2013): AEVB, wake-sleep and Monte Carlo EM", "",
             f"Budget {budget / 60:.1f} minutes ({wall / 60:.1f} used), split evenly over "
             f"{len(METHODS) * len(rows)} curves. log p(x) is the appendix-D estimate, nats "
             "per datapoint (higher is better), mean ± standard error over the scored points. "
             "Every method is scored on the same points by the same estimator. Each of its "
             f"chains starts at the best of {EVAL_HMC.init_draws:,} draws from the encoder by "
             "log p(x, z); "
             "MCEM has no encoder, so its draws come from the untrained one, near the "
             "prior.",
             "", "| dataset | N_train | N_z | " + " | ".join(
                 f"{m} train | {m} test | {m} samples" for m in METHODS) + " |",
             "|---|---|---|" + "---|---|---|" * len(METHODS)]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n_train']} | {r['latent']} | " + " | ".join(
            f"{r[f'{k}_train']:.2f} | {r[f'{k}_test']:.2f} ± {r[f'{k}_test_se']:.2f} | "
            f"{r[f'{k}_samples']:.3g}" for k in keys) + " |")
    bad = [f"{_label(r)}: {e}" for r in rows for e in r["positive_estimates"]]
    lines += ["", "**Estimator check:** " + (
        "every estimate is ≤ 0 nats, as it must be for binary images under a Bernoulli "
        "decoder." if not bad else
        "FAILED. log p(x) of binary images under a Bernoulli decoder cannot exceed 0, but "
        "these estimates do, so the estimator failed there (chains that had not met, or a "
        "Gaussian fitted to too few draws): " + "; ".join(bad) + ".")]
    lines += ["", "## The paper's claims, checked", ""]
    best = [r for r in rows if all(r[f"aevb_vs_{k}"] == "AEVB ahead" for k in keys[1:])]
    lines.append(
        "1. *AEVB reaches the highest marginal likelihood, for the small and the large "
        f"training set.* At the end of the budget AEVB is ahead of both others on the test "
        f"set, by more than twice the standard error of the difference paired over the same "
        f"points, in {len(best)} of {len(rows)} panels. AEVB − wake-sleep and AEVB − MCEM: "
        + "; ".join(f"{_label(r)}: {r['aevb_minus_wake_sleep']:+.2f} ± "
                    f"{r['aevb_minus_wake_sleep_se']:.2f} ({r['aevb_vs_wake_sleep']}) and "
                    f"{r['aevb_minus_mcem']:+.2f} ± {r['aevb_minus_mcem_se']:.2f} "
                    f"({r['aevb_vs_mcem']})" for r in rows) + " nats.")
    same = []
    for r in rows:
        vals = ", ".join(f"{m} {_fmt(r[f'{k}_test_at_common'])}"
                         for m, k in zip(METHODS, keys, strict=True))
        same.append(f"{_label(r)}, at {r['common_samples']:.3g} samples: {vals}")
    lines.append("2. *At the same number of training samples evaluated* (the point the "
                 "slowest method reached, each curve interpolated in log samples; — where a "
                 "method's first estimate came later), test log p(x): " + "; ".join(same)
                 + ".")
    lines.append("3. *Monte Carlo EM does not scale to the large training set* (it is not "
                 "an on-line algorithm: every datapoint carries its own chain). "
                 + _scaling(rows) + ".")
    gaps = "; ".join(f"{_label(r)}: " + ", ".join(
        f"{m} {r[f'{k}_gap']:.2f}" for m, k in zip(METHODS, keys, strict=True)) for r in rows)
    lines.append(f"4. *Overfitting on the small training set.* The train − test gap at the "
                 f"end: {gaps} nats.")
    lines.append("5. *How far along the paper's x-axis* (about 10⁸ samples): "
                 + "; ".join(f"{_label(r)}: " + ", ".join(
                     f"{m} {r[f'{k}_fraction_of_paper_axis']:.2%}"
                     for m, k in zip(METHODS, keys, strict=True)) for r in rows)
                 + ". These are the early part of the paper's curves; their end values are "
                 "not the paper's.")
    return "\n".join(lines) + "\n"


def figure(curves: dict[tuple[str, int, int], dict[str, Curve]], budget: float) -> Any:
    """One panel per (dataset, N_train, N_z): log p(x) against samples, log x, train solid and
    test dashed (the table in ``report.md`` gives the standard errors)."""
    import matplotlib.pyplot as plt

    panels_ = list(curves)
    fig, axes = plt.subplots(1, len(panels_), figsize=(4.6 * len(panels_), 3.6), squeeze=False)
    colors = {"AEVB": "tab:red", "wake-sleep": "tab:blue", "MCEM": "tab:green"}
    for ax, p in zip(axes[0], panels_, strict=True):
        for m, c in curves[p].items():
            ax.plot(c.samples, c.train, color=colors[m], lw=1, marker="o", ms=3,
                    label=f"{m} train")
            ax.plot(c.samples, c.test, color=colors[m], lw=1, ls="--", marker="s", ms=3,
                    label=f"{m} test")
        ax.set_xscale("log")
        ax.set(title=f"{p[0]}, $N_{{train}}$ = {p[1]}, $N_z$ = {p[2]}",
               xlabel="training samples evaluated", ylabel="log p(x), appendix D (nats)")
        ax.legend(fontsize=7)
    fig.suptitle(f"AEVB against wake-sleep and Monte Carlo EM (figure 3 of Kingma & Welling), "
                 f"{budget / 60:.0f} min in all", fontsize=10)
    fig.tight_layout()
    return fig


def fig3(out: Path, o: Fig3Options) -> dict[str, Any]:
    """Run figure 3 into ``out``: ``runs/<dataset>-n<N_train>-z<N_z>-<method>/`` folders,
    ``aevb_fig3.png``, ``report.md``; returns the flat metrics."""
    t0 = time.perf_counter()
    o, ps = plan(o)
    check(not (out / "runs").exists(), f"{out} already holds the runs/ of an earlier "
                                       "reproduction: pass another --out")
    share = o.budget / (len(ps) * len(METHODS))
    train_seconds = share * TRAIN_FRACTION
    curves: dict[tuple[str, int, int], dict[str, Curve]] = {}
    for dataset, n, latent in ps:
        base = out / "runs" / f"{dataset}-n{n}-z{latent}"
        c = {m: vae_curve(Path(f"{base}-{m}"), dataset, n, latent, m, o, train_seconds)
             for m in ("AEVB", "wake-sleep")}
        c["MCEM"] = mcem_curve(Path(f"{base}-MCEM"), Path(f"{base}-AEVB"), o, train_seconds)
        curves[(dataset, n, latent)] = c
    wall = time.perf_counter() - t0
    save_figure(figure(curves, o.budget), out / "aevb_fig3.png")
    rows = verdicts(curves)
    atomic_write_bytes(out / "report.md", report(rows, o.budget, wall).encode())
    atomic_write_bytes(out / "curves.json", (json.dumps(
        [{"dataset": d, "n_train": n, "latent": k, "method": m, **cv._asdict()}
         for (d, n, k), c in curves.items() for m, cv in c.items()], indent=1) + "\n").encode())
    return {"budget_seconds": o.budget, "seconds_per_curve": share, "wall_seconds": wall,
            "n_eval": o.n_eval, "evals": o.evals, "eval_hmc": EVAL_HMC._asdict(),
            **flat_metrics(rows, {"dataset": "", "n_train": "n", "latent": "z"})}
