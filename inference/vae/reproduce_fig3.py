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

Each curve gets an equal share of the wall-clock budget. Three quarters of the share trains;
the estimates are taken when the training time reaches 1/2^(E-1), ..., 1/2, 1 of that (E
evaluations, evenly spaced on the paper's log axis), and take the rest.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.evidence.hmc import HMCEvidenceOptions, hmc_evidence
from varbayes.inference.io import atomic_write_bytes, save_figure
from varbayes.inference.vae.run import export_arrays, load_run, run_batches
from varbayes.inference.vae.train import TrainSpec, train_run, train_transform
from varbayes.models.errors import check

#: The paper's training-set sizes, latent size and hidden width.
PAPER_TRAIN_SIZES = (1000, 50000)
PAPER_LATENT = 3
HIDDEN = 100
DATASETS = ("mnist", "digits")
METHODS = ("AEVB", "wake-sleep", "MCEM")
#: The share of each curve's budget spent training (the rest scores it).
TRAIN_FRACTION = 0.75
#: The right end of the paper's x-axis (training samples evaluated).
PAPER_SAMPLES = 1e8
#: The appendix-D estimator as scored here: 2 chains, 100 adapting transitions, 100 draws
#: (50 fit the Gaussian, 50 score it), 10 leapfrog steps.
EVAL_HMC = HMCEvidenceOptions(n_samples=100, n_warmup=100, chains=2, n_leapfrog=10)


class Fig3Options(NamedTuple):
    """What ``varbayes reproduce aevb-fig3`` runs."""

    budget: float = 3600.0
    """Wall-clock seconds for every curve together, scoring included."""
    datasets: tuple[str, ...] = ("mnist",)
    train_sizes: tuple[int, ...] = PAPER_TRAIN_SIZES
    latents: tuple[int, ...] = (PAPER_LATENT,)
    evals: int = 5
    """Estimates per curve."""
    n_eval: int = 500
    """Points of the training set and of the test set that each estimate scores."""
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


def panels(o: Fig3Options) -> list[tuple[str, int, int]]:
    """(dataset, training-set size, N_z) of every panel, checked before any work."""
    from varbayes.inference.data import datasets

    check(len(o.datasets) > 0, "--datasets must name at least one of " + ", ".join(DATASETS))
    check(o.budget > 0, f"--budget must be > 0 seconds, got {o.budget}")
    check(isinstance(o.evals, int) and o.evals >= 1, f"--evals must be >= 1, got {o.evals}")
    check(isinstance(o.n_eval, int) and o.n_eval >= 2, f"--n-eval must be >= 2, got {o.n_eval}")
    check(o.lr > 0, f"--lr must be > 0, got {o.lr}")
    out = []
    for d in o.datasets:
        check(d in DATASETS, f"--datasets: {d!r} is not one of {', '.join(DATASETS)} (figure 3 "
                             "is on binary images)")
        n_avail = len(datasets.load(d, o.data_dir).x_train)
        for n in o.train_sizes:
            check(100 <= n <= n_avail, f"--train-sizes: {n} is not in [100, {n_avail}], the "
                                       f"minibatch size and {d}'s training set")
            for k in o.latents:
                check(k >= 1, f"--latents must be >= 1, got {k}")
                out.append((d, int(n), int(k)))
    return out


def eval_times(train_seconds: float, evals: int) -> list[float]:
    """Cumulative training seconds at which to score: T/2^(E-1), ..., T/2, T."""
    return [train_seconds * 2.0 ** (k - evals + 1) for k in range(evals)]


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

    def add(self, samples: float, vae: Any, x_train: np.ndarray, x_test: np.ndarray,
            seed: int) -> None:
        t0 = time.perf_counter()
        tr, tr_se = mean_se(log_evidence(vae, x_train, seed))
        self.last_test = log_evidence(vae, x_test, seed + 1)
        te, te_se = mean_se(self.last_test)
        self.eval_seconds += time.perf_counter() - t0
        self.rows.append((samples, tr, te, tr_se, te_se))

    def curve(self, train_seconds: float) -> Curve:
        cols = [list(map(float, c)) for c in zip(*self.rows, strict=True)]
        return Curve(*cols, train_seconds, self.eval_seconds,
                     [float(v) for v in self.last_test])


def vae_curve(out: Path, dataset: str, n_train: int, latent: int, method: str,
              o: Fig3Options, train_seconds: float) -> Curve:
    """Train AEVB or wake-sleep into the run folder ``out`` in segments, scoring after each."""
    spec = TrainSpec(dataset=dataset, data_dir=o.data_dir, latent=latent, hidden=(HIDDEN,),
                     objective="elbo" if method == "AEVB" else "wake-sleep", elbo="meanfield",
                     optimizer="adagrad", lr=o.lr, batch_size=100, weight_decay=1.0,
                     epochs=1_000_000, n_train=n_train, n_test=o.n_eval, seed=o.seed)
    out.mkdir(parents=True, exist_ok=True)
    scores, spent = _Scores(), 0.0
    for k, t in enumerate(eval_times(train_seconds, o.evals)):
        t0 = time.perf_counter()
        r = train_run(spec._replace(time_limit=max(t - spent, 1e-3), resume=k > 0), out)
        spent += time.perf_counter() - t0
        run = load_run(out, o.data_dir)
        scores.add(float(r.epochs * n_train), run.vae, run.data.x_train_eval[:o.n_eval],
                   run.data.x_test[:o.n_eval], o.seed + 2 * k)
    return scores.curve(spent)


def mcem_curve(out: Path, aevb_run: Path, o: Fig3Options, train_seconds: float) -> Curve:
    """Monte Carlo EM on the decoder of the AEVB run ``aevb_run`` (its configuration, data
    and seed, freshly initialized), in segments, scoring after each. The estimator's chains
    start at the (untrained) encoder's draws and warm up from there."""
    import equinox as eqx

    from varbayes.inference.mcmc.mcem import MCEMOptions, mcem
    from varbayes.models.vae import numpyro_model

    run = load_run(aevb_run, o.data_dir)
    config, data = run.vae.config, run.data
    vae0 = numpyro_model.build(config, seed=o.seed)
    encoder = {"encoder$params": eqx.filter(vae0.encoder, eqx.is_inexact_array)}

    def trained(params: dict[str, Any]) -> Any:
        return numpyro_model.with_params(vae0, {**params, **encoder})

    options = MCEMOptions(epochs=1_000_000, batch_size=100, optimizer="adagrad", lr=o.lr,
                          m_steps=5, hmc_steps=1, n_leapfrog=10, target_accept=0.9,
                          seed=o.seed)
    out.mkdir(parents=True, exist_ok=True)
    scores, spent = _Scores(), 0.0
    for k, t in enumerate(eval_times(train_seconds, o.evals)):
        t0 = time.perf_counter()
        r = mcem(functools.partial(numpyro_model.model, vae0), (data.x_train, None),
                 options=options._replace(time_limit=max(t - spent, 1e-3)),
                 transform=train_transform(config, data.binarize == "dynamic"),
                 checkpoint=out / "checkpoint.npz", resume=k > 0,
                 export=lambda p: export_arrays(numpyro_model.weights(trained(p))))
        spent += time.perf_counter() - t0
        scores.add(float(r.epochs * len(data.x_train)), trained(r.params),
                   data.x_train_eval[:o.n_eval], data.x_test[:o.n_eval], o.seed + 2 * k)
    atomic_write_bytes(out / "history.json", (json.dumps(r.history) + "\n").encode())
    return scores.curve(spent)


def value_at(c: Curve, samples: float) -> float | None:
    """The test estimate at ``samples``, interpolated linearly in log samples between the
    curve's estimates; None outside them."""
    if not c.samples[0] <= samples <= c.samples[-1]:
        return None
    return float(np.interp(np.log(samples), np.log(c.samples), c.test))


def verdicts(curves: dict[tuple[str, int, int], dict[str, Curve]]) -> list[dict[str, Any]]:
    """Per panel: final estimates, the best method, the methods compared at the samples the
    slowest one reached, and how far along the paper's x-axis each got."""
    rows = []
    for (dataset, n, latent), c in curves.items():
        row: dict[str, Any] = {"dataset": dataset, "n_train": n, "latent": latent}
        for m, cv in c.items():
            key = m.lower().replace("-", "_")
            row.update({f"{key}_train": cv.train[-1], f"{key}_test": cv.test[-1],
                        f"{key}_test_se": cv.test_se[-1], f"{key}_samples": cv.samples[-1],
                        f"{key}_gap": cv.train[-1] - cv.test[-1],
                        f"{key}_seconds": cv.train_seconds + cv.eval_seconds})
        common = min(cv.samples[-1] for cv in c.values())
        row["common_samples"] = common
        for m, cv in c.items():
            row[f"{m.lower().replace('-', '_')}_test_at_common"] = value_at(cv, common)
        row["best_test"] = max(c, key=lambda m: c[m].test[-1])
        for m in ("wake-sleep", "MCEM"):  # paired over the same test points
            d, se = mean_se(np.asarray(c["AEVB"].final_test_points)
                            - np.asarray(c[m].final_test_points))
            row[f"aevb_minus_{m.lower().replace('-', '_')}"] = d
            row[f"aevb_minus_{m.lower().replace('-', '_')}_se"] = se
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def report(rows: list[dict[str, Any]], budget: float, wall: float) -> str:
    """``report.md``: our curves beside the paper's claims, point by point."""
    keys = [m.lower().replace("-", "_") for m in METHODS]
    lines = ["# Figure 3 of Kingma & Welling (2013): AEVB, wake-sleep and Monte Carlo EM", "",
             f"Budget {budget / 60:.1f} minutes ({wall / 60:.1f} used), split evenly over "
             f"{len(METHODS) * len(rows)} curves. log p(x) is the appendix-D estimate, nats "
             "per datapoint (higher is better), mean ± standard error over the scored points.",
             "", "| dataset | N_train | N_z | " + " | ".join(
                 f"{m} train | {m} test | {m} samples" for m in METHODS) + " |",
             "|---|---|---|" + "---|---|---|" * len(METHODS)]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n_train']} | {r['latent']} | " + " | ".join(
            f"{r[f'{k}_train']:.2f} | {r[f'{k}_test']:.2f} ± {r[f'{k}_test_se']:.2f} | "
            f"{r[f'{k}_samples']:.3g}" for k in keys) + " |")
    lines += ["", "## The paper's claims, checked", ""]
    best = [r for r in rows if r["best_test"] == "AEVB"]
    lines.append(f"1. *AEVB reaches the highest marginal likelihood, for the small and the "
                 f"large training set.* At the end of the budget AEVB is best on the test set "
                 f"in {len(best)} of {len(rows)} panels" + ("." if len(best) == len(rows) else
                 ": " + "; ".join(f"not at {r['dataset']} N_train={r['n_train']}, where "
                                  f"{r['best_test']} is" for r in rows if r not in best)
                 + ".") + " AEVB − wake-sleep and AEVB − MCEM on the test set, paired over "
                 "the same points: " + "; ".join(
                     f"N_train={r['n_train']}: {r['aevb_minus_wake_sleep']:+.2f} ± "
                     f"{r['aevb_minus_wake_sleep_se']:.2f} and {r['aevb_minus_mcem']:+.2f} ± "
                     f"{r['aevb_minus_mcem_se']:.2f}" for r in rows) + " nats.")
    same = []
    for r in rows:
        vals = ", ".join(f"{m} {_fmt(r[f'{k}_test_at_common'])}"
                         for m, k in zip(METHODS, keys, strict=True))
        same.append(f"{r['dataset']} N_train={r['n_train']}, at {r['common_samples']:.3g} "
                    f"samples: {vals}")
    lines.append("2. *At the same number of training samples evaluated* (the point the "
                 "slowest method reached, each curve interpolated in log samples; — where a "
                 "method's first estimate came later): " + "; ".join(same) + ".")
    big = max(rows, key=lambda r: r["n_train"])
    lines.append(f"3. *Monte Carlo EM does not scale to the large training set* (it is not "
                 f"an on-line algorithm). On {big['dataset']} with N_train={big['n_train']} "
                 f"MCEM evaluated {big['mcem_samples']:.3g} samples in its share of the "
                 f"budget against AEVB's {big['aevb_samples']:.3g} "
                 f"({big['aevb_samples'] / big['mcem_samples']:.2g}× as many), and ended at "
                 f"{big['mcem_test']:.2f} against AEVB's {big['aevb_test']:.2f} nats.")
    gaps = "; ".join(f"N_train={r['n_train']}: " + ", ".join(
        f"{m} {r[f'{k}_gap']:.2f}" for m, k in zip(METHODS, keys, strict=True)) for r in rows)
    lines.append(f"4. *Overfitting on the small training set.* The train − test gap at the "
                 f"end: {gaps} nats.")
    lines.append(f"5. *How far along the paper's x-axis* (about {PAPER_SAMPLES:.0e} samples): "
                 + ", ".join(f"{r['dataset']} N_train={r['n_train']}: AEVB "
                             f"{r['aevb_samples'] / PAPER_SAMPLES:.2%}, MCEM "
                             f"{r['mcem_samples'] / PAPER_SAMPLES:.2%}" for r in rows)
                 + ". These are the early part of the paper's curves; their end values are "
                 "not the paper's.")
    return "\n".join(lines) + "\n"


def figure(curves: dict[tuple[str, int, int], dict[str, Curve]], budget: float) -> Any:
    """One panel per (dataset, N_train, N_z): log p(x) against samples, log x, train solid and
    test dashed (the table in ``report.md`` gives the standard errors)."""
    import matplotlib.pyplot as plt

    keys = list(curves)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    colors = {"AEVB": "tab:red", "wake-sleep": "tab:blue", "MCEM": "tab:green"}
    for ax, key in zip(axes[0], keys, strict=True):
        for m, c in curves[key].items():
            ax.plot(c.samples, c.train, color=colors[m], lw=1, marker="o", ms=3,
                    label=f"{m} train")
            ax.plot(c.samples, c.test, color=colors[m], lw=1, ls="--", marker="s", ms=3,
                    label=f"{m} test")
        ax.set_xscale("log")
        ax.set(title=f"{key[0]}, $N_{{train}}$ = {key[1]}, $N_z$ = {key[2]}",
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
    ps = panels(o)
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
    metrics: dict[str, Any] = {"budget_seconds": o.budget, "seconds_per_curve": share,
                               "wall_seconds": wall, "n_eval": o.n_eval, "evals": o.evals,
                               "eval_hmc": EVAL_HMC._asdict()}
    for r in rows:
        key = f"{r['dataset']}_n{r['n_train']}_z{r['latent']}"
        for k, v in r.items():
            if k not in ("dataset", "n_train", "latent") and v is not None:
                metrics[f"{key}_{k}"] = v if isinstance(v, str) else float(v)
    return metrics
