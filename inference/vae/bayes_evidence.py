"""The test log-likelihood of a VAE run by every estimator, with a Bayesian decoder's θ
averaged over q(θ): the one implementation behind ``varbayes evidence``.

A Bayesian decoder has no single p(x|θ); two numbers are natural, and both are returned
(nats per datapoint, with S = ``n_theta`` draws θ_s ~ q(θ) shared by all datapoints and
estimators, and for importance sampling K = ``k`` draws z ~ q(z|x) per datapoint and θ_s,
weights w_sk = p(x|z_sk,θ_s) p(z_sk) / q(z_sk|x)):

- the **predictive** estimate, log (1/S) Σ_s p̂(x|θ_s): for IS this is log (1/(SK)) Σ_s Σ_k
  w_sk, the joint IS estimate over (θ, z) of **log E_q(θ)[p(x|θ)]**, the log posterior-
  predictive density of a test point with q(θ) standing in for p(θ|D). It is a stochastic
  lower bound (by Jensen; the bias shrinks as S·K grows), with q(θ) as the proposal for θ
  and q(z|x) for z. Every other estimator's p̂(x|θ_s) is combined the same way.
- the **average**, (1/S) Σ_s log p̂(x|θ_s): an estimate of **E_q(θ)[log p(x|θ)]**, the
  score of an "average model" drawn from q(θ). It is ≤ the predictive estimate up to noise
  (Jensen over θ); it bounds nothing in particular.

For a MAP/ML VAE run (no q(θ)) S = 1 and both equal the usual estimate of log p(x) with the
point-estimate decoder, so the same function scores both kinds of run on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference import ranks
from varbayes.inference.evidence.ais import DEFAULTS, AISOptions, ais
from varbayes.inference.evidence.figures import ais_curve, is_curve
from varbayes.inference.evidence.hmc import HMCEvidenceOptions, hmc_evidence
from varbayes.inference.evidence.importance import ISResult, importance_sampling, log_mean_exp
from varbayes.inference.evidence.quadrature import QuadratureResult, quadrature
from varbayes.inference.evidence.sites import numpyro_log_joint
from varbayes.inference.io import save_figure, write_metrics
from varbayes.inference.vae.run import (
    Run,
    heldout_arrays,
    load_run,
    numpyro_twin,
    run_batches,
    two_layers,
)
from varbayes.models.bayesian_vae.predictive import decoder_draws
from varbayes.models.errors import check

ESTIMATORS = ("elbo", "is", "ais", "hmc", "quadrature")
"""What :func:`bayesian_log_evidence` can compute; ``elbo`` comes with ``is``."""
Progress = Callable[[Iterable, str], Iterable] | None
"""``(batches, label) -> batches``, e.g. a progress bar per estimator; None for none."""
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
"""Nested sample counts K' at which ``varbayes evidence`` reports the IS curve."""


def curve_ks(k: int) -> list[int]:
    """The K' of :data:`CURVE_KS` below ``k``: the IS estimate against compute for free."""
    return [j for j in CURVE_KS if j < k]


def theta_vaes(mod: Any, vae: Any, sigma: dict[str, np.ndarray] | None, n_theta: int,
               seed: int) -> list[Any]:
    """``[vae]`` for a point-estimate decoder (``sigma`` None); else ``n_theta`` copies of
    it whose decoders are draws θ_s ~ N(μ, σ²) = q(θ), μ being ``vae``'s decoder."""
    if sigma is None:
        return [vae]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 37]))
    return decoder_draws(mod, vae.config, mod.weights(vae), sigma, n_theta, rng)


def joint_ess(log_px: np.ndarray, ess: np.ndarray, k: int) -> np.ndarray:
    """ESS of the S·K pooled weights from per-θ IS results: ``log_px`` (S, N) = log of the
    mean of each θ's K weights and ``ess`` (S, N) = (Σw)²/Σw² of each; returns (N,)."""
    log_sum = np.log(k) + log_px  # log Σ_k w_sk
    log_sq = 2 * log_sum - np.log(ess)  # log Σ_k w_sk²
    return np.exp(2 * log_mean_exp(log_sum, axis=0) - log_mean_exp(log_sq, axis=0)
                  + np.log(len(log_px)))


class BayesEvidence(NamedTuple):
    """What :func:`bayesian_log_evidence` returns; arrays per datapoint, nats."""

    predictive: np.ndarray
    """(N,) IS estimate of log E_q(θ)[p(x|θ)] (joint IS over θ and z; lower-biased)."""
    average: np.ndarray
    """(N,) IS estimate of E_q(θ)[log p(x|θ)] (IWAE per θ draw, averaged; lower-biased)."""
    per_theta: np.ndarray
    """(S, N) IWAE estimate of log p(x|θ_s) for every θ draw."""
    ess: np.ndarray
    """(N,) effective sample size of the S·K joint importance weights."""
    k: int
    """z draws per datapoint and θ draw."""
    n_theta: int
    """θ draws S (1 for a point-estimate run)."""
    bayesian: bool
    """Whether the run had a q(θ)."""
    estimates: dict[str, Any]
    """Per estimator, its result with θ combined: ``is`` an :class:`ISResult` (``log_px``
    the predictive estimate, ``elbo`` averaged over θ, ``ess`` pooled, ``khat`` the largest,
    ``seconds`` summed), ``quadrature`` a :class:`QuadratureResult`, ``ais`` T ->
    :class:`AISResult` for each number of steps, ``hmc`` an :class:`HMCEvidenceResult`;
    each ``log_px`` is log (1/S) Σ_s p̂(x|θ_s)."""
    averages: dict[str, np.ndarray]
    """Per estimator, (N,) the mean over θ_s of log p̂(x|θ_s) (AIS: at the largest T)."""


def bayesian_log_evidence(run: Run | str | Path, x: np.ndarray, k: int = 100, n_theta: int = 10,
                          seed: int = 0, c: np.ndarray | None = None, batch_size: int = 500,
                          *, estimators: Sequence[str] = ("is",), chunk: int | None = None,
                          prefix_ks: Sequence[int] = (), ais_steps: Sequence[int] = (100,),
                          ais_options: AISOptions = DEFAULTS,
                          hmc_options: HMCEvidenceOptions | None = None,
                          progress: Progress = None, devices: int = 1) -> BayesEvidence:
    """Score points ``x`` (N, D) under a VAE run by each estimator (see the module doc).

    Parameters
    ----------
    run : a :class:`~varbayes.inference.vae.run.Run` or its folder (``--bayesian`` or not).
    x : (N, D) float32 points, binarized as the run's evaluation sets are.
    k : z draws per datapoint and θ draw for IS (K ≥ 1); ``prefix_ks`` also reports the
        IS estimate from the first K' < K of them.
    n_theta : θ draws S ≥ 1 from q(θ) (ignored for a point-estimate run).
    seed : seeds the θ draws; θ draw s runs every estimator with ``seed + s``.
    c : (N, C) the conditioning of a conditional run, else None.
    batch_size : datapoints per batch.
    estimators : from :data:`ESTIMATORS`; importance sampling always runs (its K = 1 mean
        is the ELBO), ``quadrature`` needs a latent of size ≤ 2.
    ais_steps : AIS numbers of intermediate distributions T, one run each (the options'
        other settings from ``ais_options``).
    progress : ``(batches, label) -> batches``, e.g. a progress bar per estimator.
    devices : NumPyro runs: JAX devices that split the datapoints of each batch for IS, the
        ELBO and AIS (``batch_size`` must divide by it; see
        :mod:`varbayes.inference.evidence.parallel`). In a ``torchrun`` process group a
        Pyro run's datapoints are split over the torch ranks instead; every rank must call
        this and every rank gets all the results.
    """
    check(k >= 1, f"--k must be >= 1, got {k}")
    check(n_theta >= 1, f"--n-theta must be >= 1, got {n_theta}")
    bad = [e for e in estimators if e not in ESTIMATORS]
    check(not bad, f"unknown estimator(s) {', '.join(bad)}: choose from {', '.join(ESTIMATORS)}")
    if not isinstance(run, Run):
        run = load_run(run, with_data=False, two_layer_ok=True)
    check_estimators(run, estimators)
    vaes = theta_vaes(run.mod, run.vae, run.sigma, n_theta, seed)
    parts = [_point_evidence(run._replace(vae=v), x, c, estimators, k=k, seed=seed + s,
                             batch_size=batch_size, chunk=chunk, prefix_ks=prefix_ks,
                             ais_steps=ais_steps, ais_options=ais_options,
                             hmc_options=hmc_options, progress=progress, devices=devices)
               for s, v in enumerate(vaes)]
    estimates, averages, per_theta = _combine_theta(parts, k)
    is_ = estimates["is"]
    return BayesEvidence(is_.log_px, averages["is"], per_theta, is_.ess, int(k), len(vaes),
                         run.sigma is not None, estimates, averages)


def check_estimators(run: Run, estimators: Sequence[str]) -> None:
    """Refuse, in one line, the estimators that need one latent ``z`` (the appendix-D HMC
    estimator and quadrature) on a run with two stochastic layers."""
    bad = [e for e in estimators if e in ("hmc", "quadrature")]
    check(not (bad and two_layers(run.header)),
          f"{', '.join(bad)} need(s) one stochastic layer, and this run has two: use "
          "--estimators elbo,is,ais")


def _point_evidence(run: Run, x: np.ndarray, c: np.ndarray | None, names: Sequence[str], *,
                    k: int, seed: int, batch_size: int, chunk: int | None,
                    prefix_ks: Sequence[int],
                    ais_steps: Sequence[int], ais_options: AISOptions,
                    hmc_options: HMCEvidenceOptions | None, progress: Progress,
                    devices: int = 1) -> dict[str, Any]:
    """Every requested estimator for one decoder (a point estimate or one θ draw); IS and
    AIS split each batch over ``devices`` JAX devices."""
    def bar(label: str) -> Callable[[Iterable], Iterable] | None:
        return None if progress is None else (lambda b: progress(b, label))

    batches = run_batches(run.vae, run.backend, x, c, batch_size)
    got: dict[str, Any] = {"is": importance_sampling(
        run.mod.model, run.mod.guide, batches, k, backend=run.backend, chunk=chunk, seed=seed,
        prefix_ks=prefix_ks, progress=bar("evidence"), devices=devices)}
    if "quadrature" in names or "hmc" in names:
        twin = numpyro_twin(run)  # the JAX-only estimators run on the same weights in NumPyro
        twin_batches = run_batches(twin, "numpyro", x, c, batch_size)
    if "quadrature" in names:
        got["quadrature"] = _quadrature(twin, twin_batches)
    if "ais" in names:
        got["ais"] = {T: ais(run.mod.model, run.mod.guide, batches,
                             ais_options._replace(n_steps=T), backend=run.backend, seed=seed,
                             progress=bar(f"ais T={T}"), devices=devices)
                      for T in sorted(set(ais_steps))}
    if "hmc" in names:
        from varbayes.models.vae import numpyro_model

        got["hmc"] = hmc_evidence(numpyro_model.model, numpyro_model.guide, twin_batches,
                                  hmc_options, seed=seed, progress=bar("hmc"))
    return got


def _quadrature(vae: Any, batches: list[Any]) -> QuadratureResult:
    """Quadrature over z (latent size ≤ 2) for a NumPyro VAE, batch by batch."""
    from varbayes.models.vae import numpyro_model

    K = vae.config.z_dim
    check(K <= 2, f"quadrature needs latent size <= 2, but this run has {K}: use is")
    parts = []
    for (_, xb, cb), _kw in batches:
        lj = numpyro_log_joint(numpyro_model.model, "z", vae, xb, cb)
        parts.append(quadrature(lj, K, xb.shape[0]))
    return QuadratureResult(np.concatenate([q.log_px for q in parts]),
                            np.concatenate([q.refinement for q in parts]),
                            sum(q.seconds for q in parts))


def _lme(arrays: list[np.ndarray]) -> np.ndarray:
    """log-mean-exp over θ draws, per datapoint."""
    return log_mean_exp(np.stack(arrays), axis=0)


def _combine_theta(parts: list[dict[str, Any]], k: int
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """(estimates, averages, IS per θ (S, N)) from per-θ results (see :class:`BayesEvidence`).
    One part is returned unchanged."""
    isr: list[ISResult] = [p["is"] for p in parts]
    per_theta = np.stack([r.log_px for r in isr])
    first = parts[0]
    ais_top = max(first["ais"]) if "ais" in first else None
    averages = {"is": per_theta.mean(0)}
    if "quadrature" in first:
        averages["quadrature"] = np.mean([p["quadrature"].log_px for p in parts], axis=0)
    if ais_top is not None:
        averages["ais"] = np.mean([p["ais"][ais_top].log_px for p in parts], axis=0)
    if "hmc" in first:
        averages["hmc"] = np.mean([p["hmc"].log_px for p in parts], axis=0)
    if len(parts) == 1:
        return first, averages, per_theta
    got: dict[str, Any] = {"is": isr[0]._replace(
        log_px=_lme([r.log_px for r in isr]),
        elbo=np.mean([r.elbo for r in isr], axis=0),
        elbo_stderr=np.mean([r.elbo_stderr for r in isr], axis=0),
        ess=joint_ess(per_theta, np.stack([r.ess for r in isr]), k),
        khat=np.max([r.khat for r in isr], 0), seconds=sum(r.seconds for r in isr),
        prefix={j: _lme([r.prefix[j] for r in isr]) for j in isr[0].prefix})}
    if "quadrature" in first:
        qs = [p["quadrature"] for p in parts]
        got["quadrature"] = QuadratureResult(_lme([q.log_px for q in qs]),
                                             np.max([q.refinement for q in qs], axis=0),
                                             sum(q.seconds for q in qs))
    if ais_top is not None:
        got["ais"] = {}
        for T, r0 in first["ais"].items():
            rs = [p["ais"][T] for p in parts]
            got["ais"][T] = r0._replace(log_px=_lme([r.log_px for r in rs]),
                                        stderr=np.mean([r.stderr for r in rs], axis=0),
                                        accept=np.mean([r.accept for r in rs], axis=0),
                                        seconds=sum(r.seconds for r in rs))
    if "hmc" in first:
        hs = [p["hmc"] for p in parts]
        got["hmc"] = hs[0]._replace(log_px=_lme([h.log_px for h in hs]),
                                    stderr=np.mean([h.stderr for h in hs], axis=0),
                                    accept=float(np.mean([h.accept for h in hs])),
                                    seconds=sum(h.seconds for h in hs))
    return got, averages, per_theta


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def evidence_metrics(ev: BayesEvidence, names: Sequence[str]) -> dict[str, Any]:
    """The flat ``metrics.json`` of ``varbayes evidence`` (nats per datapoint, seconds).

    For each requested estimator ``<name>`` and ``<name>_stderr`` (the standard error of the
    mean over datapoints) and ``<name>_seconds``, plus per-estimator details (IS: the mean
    ESS of the S·K pooled weights, the Pareto k̂, the prefix curve ``is_k<K'>``; AIS:
    ``ais_t<T>`` per T, the acceptance; quadrature: the refinement check); for a Bayesian
    run also ``bayesian``, ``n_theta`` and ``<name>_average`` (± ``_stderr``), the mean over
    θ of log p̂(x|θ_s).
    """
    got = ev.estimates
    res: ISResult = got["is"]
    metrics: dict[str, Any] = {"n_data": len(res.log_px), "k": ev.k}
    if ev.n_theta > 1:
        metrics.update({"bayesian": True, "n_theta": ev.n_theta})
        for name, v in ev.averages.items():
            if name in names:
                metrics[f"{name}_average"], metrics[f"{name}_average_stderr"] = _mean_se(v)
    if "is" in names:
        metrics["is"], metrics["is_stderr"] = _mean_se(res.log_px)
        metrics["is_seconds"] = res.seconds
        metrics["is_ess_mean"] = float(res.ess.mean())
        metrics["is_khat_max"] = float(np.nanmax(res.khat)) if ev.k >= 5 else None
        metrics["is_khat_frac_above_0_7"] = (float(np.mean(res.khat > 0.7))
                                             if ev.k >= 5 else None)
        for j, v in res.prefix.items():
            metrics[f"is_k{j}"] = float(v.mean())
    if "elbo" in names:
        metrics["elbo"], metrics["elbo_stderr"] = _mean_se(res.elbo)
        metrics["elbo_seconds"] = res.seconds
    if "quadrature" in names:
        quad = got["quadrature"]
        metrics["quadrature"], metrics["quadrature_stderr"] = _mean_se(quad.log_px)
        metrics["quadrature_seconds"] = quad.seconds
        metrics["quadrature_refinement_max"] = float(quad.refinement.max())
    if "ais" in names:
        runs = got["ais"]
        top = runs[max(runs)]
        metrics["ais"], metrics["ais_stderr"] = _mean_se(top.log_px)
        metrics["ais_seconds"] = top.seconds
        metrics["ais_accept_mean"] = float(top.accept.mean()) if top.accept.size else None
        metrics["ais_chain_stderr_mean"] = float(top.stderr.mean())
        for T, r in runs.items():
            metrics[f"ais_t{T}"] = float(r.log_px.mean())
            metrics[f"ais_t{T}_seconds"] = r.seconds
    if "hmc" in names:
        hmc = got["hmc"]
        metrics["hmc"], metrics["hmc_stderr"] = _mean_se(hmc.log_px)
        metrics["hmc_seconds"] = hmc.seconds
        metrics["hmc_accept_mean"] = hmc.accept
    return metrics


def write_evidence(run: Run, out: Path, estimators: Sequence[str], *,
                   n_data: int | None = None, k: int = 1000, n_theta: int = 10, seed: int = 0,
                   batch_size: int = 500, chunk: int | None = None,
                   ais_steps: Sequence[int] = (100,),
                   ais_options: AISOptions = DEFAULTS,
                   hmc_options: HMCEvidenceOptions | None = None, progress: Progress = None,
                   devices: int = 1) -> tuple[BayesEvidence, dict[str, Any]]:
    """What ``varbayes evidence`` writes into ``out``: :func:`bayesian_log_evidence` on the
    first ``n_data`` test points of the run (all when None, over ``devices`` JAX devices),
    ``metrics.json`` (:func:`evidence_metrics` with the run's backend, ``devices``, ``nproc``
    (the torch ranks) and the AIS / HMC settings), ``evidence_vs_k.png`` and, with AIS,
    ``ais_vs_steps.png``. Returns both.

    In a distributed run every process must call it (the estimators gather across them) and
    every one gets the results, but only the main one (:func:`.ranks.is_main`) writes into
    ``out``."""
    x, c = heldout_arrays(run, n_data)
    hmc_options = hmc_options or HMCEvidenceOptions()
    steps = sorted(set(ais_steps))
    ev = bayesian_log_evidence(run, x, k, n_theta, seed, c, batch_size, estimators=estimators,
                               chunk=chunk, prefix_ks=curve_ks(k), ais_steps=steps,
                               ais_options=ais_options, hmc_options=hmc_options,
                               progress=progress, devices=devices)
    metrics = {**evidence_metrics(ev, estimators), "backend": run.backend, "devices": devices,
               "nproc": ranks.world()}
    if "ais" in estimators:
        metrics.update(ais_steps=steps[-1], ais_chains=ais_options.chains,
                       ais_schedule=ais_options.schedule, ais_init=ais_options.init)
    if "hmc" in estimators:
        metrics["hmc_samples"] = hmc_options.n_samples
    if not ranks.is_main():
        return ev, metrics
    write_metrics(out, metrics)
    save_figure(is_curve(ev.estimates["is"]), out / "evidence_vs_k.png")
    if "ais" in estimators:
        others = {n: metrics[n] for n in ("is", "elbo", "quadrature") if n in estimators}
        save_figure(ais_curve(ev.estimates["ais"], others), out / "ais_vs_steps.png")
    return ev, metrics
