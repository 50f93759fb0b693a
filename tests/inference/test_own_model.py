"""A user's own model, the same call in both backends (issue 12): one parity test per bug.

The models are small ones the project does not ship, written in both backends with exact
answers: a normal mean with known noise (conjugate: posterior, evidence and predictive in
closed form) and a local-latent model z_i ~ N(0, 1), y_i ~ N(z_i, 1), so p(y_i) = N(0, 2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from varbayes import (
    SVIOptions,
    ais,
    fit,
    guide_draws,
    importance_sampling,
    loo,
    nuts,
    q_khat,
)
from varbayes.inference.evidence.annealing import AISOptions
from varbayes.models.errors import VarbayesError

BACKENDS = ("numpyro", "pyro")
RNG = np.random.default_rng(7)
Y = RNG.normal(1.0, 2.0, size=30)  # float64 numpy on purpose: numpy is accepted everywhere
S0, SIGMA = 10.0, 2.0  # mu ~ N(0, S0²), y_i ~ N(mu, SIGMA²)
POST_VAR = 1 / (1 / S0**2 + len(Y) / SIGMA**2)
POST_MEAN = POST_VAR * Y.sum() / SIGMA**2
EXACT = {"mu_loc": POST_MEAN, "mu_scale": math.sqrt(POST_VAR)}


def exact_log_evidence(y: np.ndarray) -> float:
    """log N(y; 0, σ² I + s0² 11ᵀ), nats."""
    n = len(y)
    cov = SIGMA**2 * np.eye(n) + S0**2
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (y @ np.linalg.solve(cov, y) + logdet + n * math.log(2 * math.pi)))


def ppl(backend):
    if backend == "numpyro":
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        return numpyro, dist, constraints, float
    import pyro
    import pyro.distributions as dist
    import torch
    from torch.distributions import constraints

    return pyro, dist, constraints, torch.tensor


def conjugate(backend, plate_name="data"):
    """mu ~ N(0, 10²), y ~ N(mu, 2²) and a Normal guide with a positive scale param."""
    p, dist, constraints, t = ppl(backend)

    def model(y, n_data=None):
        mu = p.sample("mu", dist.Normal(0.0, S0))
        with p.plate(plate_name, n_data or len(y), subsample_size=len(y)):
            p.sample("y", dist.Normal(mu, SIGMA), obs=y)

    def guide(y, n_data=None):
        loc = p.param("mu_loc", t(0.0))
        scale = p.param("mu_scale", t(1.0), constraint=constraints.positive)
        p.sample("mu", dist.Normal(loc, scale))

    return model, guide


def local(backend, plate_name="data"):
    """z_i ~ N(0, 1), y_i ~ N(z_i, 1); guide N(a y_i, s²), exact at a = 1/2, s² = 1/2."""
    p, dist, constraints, t = ppl(backend)

    def model(y):
        with p.plate(plate_name, len(y)):
            z = p.sample("z", dist.Normal(0.0, 1.0))
            p.sample("y", dist.Normal(z, 1.0), obs=y)

    def guide(y):
        a = p.param("a", t(0.0))
        s = p.param("s", t(1.0), constraint=constraints.positive)
        with p.plate(plate_name, len(y)):
            p.sample("z", dist.Normal(a * y, s))

    return model, guide


# ------------------------------------------------------------------ 1. constrained params

@pytest.mark.slow
def test_fit_returns_constrained_params_in_both_backends():
    """Bug 1: Pyro returned the param store's unconstrained leaves (log of a scale)."""
    out = {}
    for b in BACKENDS:
        model, guide = conjugate(b)
        r = fit(model, guide, Y, options=SVIOptions(backend=b, epochs=150, batch_size=10,
                                                   lr=0.05, elbo="trace", seed=1))
        out[b] = {k: float(np.asarray(v)) for k, v in r.params.items()}
    for b in BACKENDS:
        assert set(out[b]) == {"mu_loc", "mu_scale"}
        # a positive scale comes back as itself, near the exact posterior sd (0.36)
        assert 0.15 < out[b]["mu_scale"] < 0.8, out
        assert abs(out[b]["mu_loc"] - POST_MEAN) < 0.3, out


# ------------------------------------------------------- 2. only observed sites, dims

@pytest.fixture(scope="module")
def nuts_runs():
    runs = {}
    for b in BACKENDS:
        model, _ = conjugate(b)
        runs[b] = nuts(model, Y, backend=b, num_chains=2, num_warmup=300, num_samples=400,
                       seed=2, progress_bar=False, coords={"obs_id": np.arange(len(Y))},
                       dims={"y": ["obs_id"]})
    return runs


@pytest.mark.slow
def test_nuts_log_likelihood_holds_only_observed_sites(nuts_runs):
    """Bug 2: Pyro put the latent mu into log_likelihood, and loo() then failed."""
    for b, idata in nuts_runs.items():
        assert list(idata.log_likelihood.data_vars) == ["y"], b
        assert list(idata.observed_data.data_vars) == ["y"], b
        r = loo(idata)
        assert math.isfinite(r.elpd_loo), b


@pytest.mark.slow
def test_groups_and_dimension_names_are_the_same_in_both_backends(nuts_runs):
    """Bug 8: the plate dimension was ``data`` in NumPyro and ``y_dim_0`` in Pyro; coords and
    dims were not passed through; there was no predictive group."""
    shapes = {}
    for b, idata in nuts_runs.items():
        assert {"posterior", "sample_stats", "log_likelihood", "observed_data",
                "posterior_predictive", "prior", "prior_predictive"} <= set(idata.groups()), b
        shapes[b] = {g: {v: idata[g][v].dims for v in idata[g].data_vars}
                     for g in ("posterior", "log_likelihood", "observed_data",
                               "posterior_predictive", "prior", "prior_predictive")}
        assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs_id"), b
    assert shapes["numpyro"] == shapes["pyro"]
    model, _ = conjugate("pyro")
    plain = nuts(model, Y, backend="pyro", num_chains=1, num_warmup=20, num_samples=10,
                 progress_bar=False, predictive=False)
    assert plain.log_likelihood["y"].dims == ("chain", "draw", "data")  # the plate's name


@pytest.mark.slow
def test_predictive_groups_match_the_closed_form(nuts_runs):
    """y_new | y ~ N(m, s² + σ²) and y ~ N(0, s0² + σ²) a priori, per datapoint."""
    for b, idata in nuts_runs.items():
        pp = idata.posterior_predictive["y"].values.ravel()
        assert abs(pp.mean() - POST_MEAN) < 0.1, b
        assert abs(pp.var() / (POST_VAR + SIGMA**2) - 1) < 0.05, b
        prior = idata.prior_predictive["y"].values[..., 0].ravel()  # one point, 400 draws
        assert abs(prior.std() / math.sqrt(S0**2 + SIGMA**2) - 1) < 0.15, b
        assert abs(idata.prior["mu"].values.std() / S0 - 1) < 0.15, b


# --------------------------------------------------------------- 3. the wrong backend

@pytest.mark.parametrize("declared", BACKENDS)
def test_a_model_of_the_other_backend_is_refused_by_every_entry(declared):
    """Bug 3: a Pyro model with the default backend="numpyro" returned an empty result."""
    other = next(b for b in BACKENDS if b != declared)
    model, guide = conjugate(other)
    lmodel, lguide = local(other)
    match = f"is a {'Pyro' if other == 'pyro' else 'NumPyro'} model.*pass backend='{other}'"
    calls = [
        lambda: nuts(model, Y, backend=declared, num_chains=1, num_warmup=5, num_samples=5,
                     progress_bar=False),
        lambda: fit(model, guide, Y, options=SVIOptions(backend=declared, epochs=1)),
        lambda: importance_sampling(model, guide, [((Y,), {})], 10, backend=declared,
                                    plate=None),
        lambda: ais(lmodel, lguide, [((Y,), {})], AISOptions(n_steps=3, chains=2),
                    backend=declared),
        lambda: guide_draws(model, guide, Y, backend=declared, num_samples=10),
    ]
    for call in calls:
        with pytest.raises(VarbayesError, match=match):
            call()


# -------------------------------------------------- 4. params= means the same everywhere

@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_importance_sampling_with_params_is_exact_on_the_exact_guide(backend):
    """Bug 4: NumPyro IS silently used the guide's initial params; Pyro read the store."""
    model, guide = conjugate(backend)
    r = importance_sampling(model, guide, [((Y,), {})], 200, backend=backend, plate=None,
                            params=EXACT)
    assert r.log_px.shape == (1,)
    assert abs(r.log_px[0] - exact_log_evidence(Y)) < 1e-3
    assert r.elbo_stderr[0] < 1e-3  # every weight equals p(y)


@pytest.mark.slow
def test_without_params_both_backends_use_the_initial_values_not_the_global_store():
    import pyro
    import torch

    res = {}
    for b in BACKENDS:
        model, guide = conjugate(b)
        with pyro.get_param_store().scope():
            pyro.param("mu_loc", torch.tensor(POST_MEAN))  # a stale global store
            res[b] = importance_sampling(model, guide, [((Y,), {})], 20_000, backend=b,
                                         plate=None, seed=3)
            assert float(pyro.param("mu_loc")) == pytest.approx(POST_MEAN)  # untouched
    # loc 0, scale 1 (far from the posterior): a loose bound, the same in both backends
    elbo = {b: r.elbo[0] for b, r in res.items()}
    assert elbo["numpyro"] < exact_log_evidence(Y) - 1
    assert abs(elbo["numpyro"] - elbo["pyro"]) < 5 * math.hypot(
        res["numpyro"].elbo_stderr[0], res["pyro"].elbo_stderr[0])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ais_and_is_take_params_for_a_local_latent_model(backend):
    model, guide = local(backend)
    y = RNG.normal(0, math.sqrt(2), size=8)
    exact = -0.5 * (y**2 / 2 + math.log(2 * math.pi * 2))
    params = {"a": 0.5, "s": math.sqrt(0.5)}
    r = importance_sampling(model, guide, [((y,), {})], 50, backend=backend, params=params)
    np.testing.assert_allclose(r.log_px, exact, atol=1e-4)
    a = ais(model, guide, [((y,), {})], AISOptions(n_steps=20, chains=8, init="guide"),
            backend=backend, params=params)
    np.testing.assert_allclose(a.log_px, exact, atol=0.05)
    with pytest.raises(VarbayesError, match=r"params= names \['b'\].*not param sites"):
        importance_sampling(model, guide, [((y,), {})], 5, backend=backend, params={"b": 1.0})


def local_elbo(y: np.ndarray, a: float, s: float) -> np.ndarray:
    """The closed-form ELBO (nats) of :func:`local` per datapoint, guide N(a y, s²)."""
    return (-math.log(2 * math.pi) - 0.5 * ((1 - a) ** 2 * y**2 + a**2 * y**2 + 2 * s**2)
            + 0.5 * math.log(2 * math.pi * s**2) + 0.5)


@pytest.mark.slow
def test_numpyro_estimators_compile_once_and_take_new_params_each_call():
    """IS and AIS keep their compiled function across calls with the same model and guide;
    the params are its arguments, so a second call with other values uses those values."""
    from varbayes.inference.evidence import ais_jax, importance

    model, guide = local("numpyro")
    y = RNG.normal(0, math.sqrt(2), size=8)
    exact = -0.5 * (y**2 / 2 + math.log(2 * math.pi * 2))
    runs = {"exact": (0.5, math.sqrt(0.5)), "loose": (0.2, 1.5)}
    is_hits = importance._numpyro_run.cache_info().hits
    ais_hits = ais_jax._compiled.cache_info().hits
    res, log_w = {}, {}
    for name, (a, s) in runs.items():
        params = {"a": a, "s": s}
        res[name] = importance_sampling(model, guide, [((y,), {})], 4000, params=params)
        np.testing.assert_allclose(res[name].elbo, local_elbo(y, a, s),
                                   atol=1e-4 + 5 * res[name].elbo_stderr.max())
        r = ais(model, guide, [((y,), {})], AISOptions(n_steps=100, chains=32, init="guide"),
                params=params)
        assert np.all(np.abs(r.log_px - exact) < 0.02 + 5 * r.stderr), (r.log_px, exact)
        log_w[name] = r.log_w
    np.testing.assert_allclose(res["exact"].log_px, exact, atol=1e-4)
    assert res["loose"].elbo.mean() < res["exact"].elbo.mean() - 0.1
    assert not np.allclose(log_w["exact"], log_w["loose"])  # the chains started elsewhere
    assert importance._numpyro_run.cache_info().hits > is_hits  # the second call: no compile
    assert ais_jax._compiled.cache_info().hits > ais_hits


# ---------------------------------------------------------- 5 and 6. inputs and errors

@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_natural_calls_work_or_fail_in_one_line(backend):
    p, dist, _, _ = ppl(backend)
    model, guide = conjugate(backend)
    quick = SVIOptions(backend=backend, epochs=2, batch_size=10)
    # one numpy float64 array, not a tuple: accepted
    assert fit(model, guide, Y, options=quick).epochs == 2

    def no_n_data(y):
        mu = p.sample("mu", dist.Normal(0.0, S0))
        with p.plate("data", len(y)):
            p.sample("y", dist.Normal(mu, SIGMA), obs=y)

    def guide_no_n_data(y):
        guide(y)

    # a model without n_data trains full-batch, and is refused for minibatches
    assert fit(no_n_data, guide_no_n_data, Y, options=quick._replace(batch_size=30)).epochs == 2
    with pytest.raises(VarbayesError, match=r"takes no n_data keyword.*batch_size >= 30"):
        fit(no_n_data, guide_no_n_data, Y, options=quick)

    def ignores_n_data(y, n_data=None):
        no_n_data(y)

    with pytest.raises(VarbayesError, match=r"'y' has its log density scaled by 1, not by "
                                            r"N/M = 30/10"):
        fit(ignores_n_data, guide, Y, options=quick)
    with pytest.raises(VarbayesError, match="must be an array with a datapoint axis"):
        fit(model, guide, (Y, 3.0), options=quick)
    # a data plate with another name: the error names plate=
    renamed, rguide = local(backend, plate_name="obs")
    with pytest.raises(VarbayesError, match=r"outside the 'data' plate \(its plates: "
                                            r"\['obs'\]\): pass plate='obs'"):
        importance_sampling(renamed, rguide, [((Y,), {})], 5, backend=backend)
    assert importance_sampling(renamed, rguide, [((Y,), {})], 5, backend=backend,
                               plate="obs").log_px.shape == (30,)


# ------------------------------------------------------------- honest diagnostics

def test_loo_uses_the_sample_size_aware_threshold_and_keeps_arviz_warnings():
    import arviz as az

    rng = np.random.default_rng(0)
    S = 60  # good_k = 1 - 1/log10(60) = 0.44
    ll = rng.normal(-1.0, 0.3, size=(1, S, 20))
    ll[..., 0] = rng.standard_t(2, size=(1, S)) * 4 - 5  # one influential, heavy-tailed point
    idata = az.from_dict(posterior={"mu": rng.normal(size=(1, S))},
                         log_likelihood={"y": ll})
    r = loo(idata)
    assert r.good_k == pytest.approx(1 - 1 / math.log10(S))
    k = np.asarray(az.loo(idata, pointwise=True).pareto_k)
    assert r.n_high_k == int((k > r.good_k).sum()) >= 1
    assert f"k̂ > {r.good_k:.2f}" in r.warning


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_khat_of_q_tells_a_good_guide_from_a_bad_one(backend):
    model, guide = conjugate(backend)
    wide = {**EXACT, "mu_scale": EXACT["mu_scale"] * 1.3}
    good = guide_draws(model, guide, Y, backend=backend, params=wide, num_chains=2,
                       num_samples=500, seed=4)
    sd = EXACT["mu_scale"]  # off by 3 posterior sds and half as wide: a heavy-tailed ratio
    narrow = guide_draws(model, guide, Y, backend=backend,
                         params={"mu_loc": POST_MEAN + 3 * sd, "mu_scale": sd / 2},
                         num_chains=2, num_samples=500, seed=4)
    assert q_khat(good).khat[0] < 0.5 and "close to the posterior" in q_khat(good).verdict
    bad = q_khat(narrow)
    assert bad.khat[0] > bad.good_k and "do not trust" in bad.verdict
    # the draws of q come with the same groups as NUTS, and the MCMC gate refuses them
    assert {"posterior", "log_likelihood", "posterior_predictive", "prior"} <= set(
        good.groups())
    with pytest.raises(VarbayesError, match="use q_khat"):
        from varbayes import gate
        gate(good)


def test_quadrature_takes_params_through_the_log_joint():
    """params= reaches quadrature's integrand: a model with a learned noise scale."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    from varbayes import numpyro_log_joint, quadrature

    def model(y):
        noise = numpyro.param("noise", 1.0, constraint=constraints.positive)
        with numpyro.plate("data", len(y)):
            z = numpyro.sample("z", dist.Normal(jnp.zeros((len(y), 1)), 1.0).to_event(1))
            numpyro.sample("y", dist.Normal(z[:, 0], noise), obs=y)

    y = RNG.normal(0, 2, size=5)
    for noise in (1.0, 2.0):  # None -> the init value 1.0; params= -> 2.0
        params = None if noise == 1.0 else {"noise": noise}
        r = quadrature(numpyro_log_joint(model, "z", y, params=params), 1, len(y))
        var = 1 + noise**2
        np.testing.assert_allclose(r.log_px, -0.5 * (y**2 / var + np.log(2 * np.pi * var)),
                                   atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_predictive_draws_have_the_datas_shape_without_a_plate(backend):
    """y ~ N(mu, σ) with obs=y outside any plate takes its shape from the data only: the
    predictive draws must still be one y per datapoint, in both backends."""
    p, dist, _, _ = ppl(backend)

    def model(y):
        mu = p.sample("mu", dist.Normal(0.0, S0))
        p.sample("y", dist.Normal(mu, SIGMA), obs=y)

    idata = nuts(model, Y, backend=backend, num_chains=1, num_warmup=30, num_samples=20,
                 progress_bar=False, prior_samples=15)
    assert idata.posterior_predictive["y"].shape == (1, 20, len(Y))
    assert idata.prior_predictive["y"].shape == (1, 15, len(Y))
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "y_dim_0")


@pytest.mark.slow
def test_review_cases_deterministic_sites_array_scales_and_params():
    """Pyro's deterministic sites are not data; per-element scales work; nuts takes
    fit(...).params of a pair; Python numbers in params= work in Pyro."""
    import pyro
    import pyro.distributions as pd
    import torch
    from numpyro import handlers as nh

    def det_model(y, n_data=None):
        mu = pyro.sample("mu", pd.Normal(0.0, S0))
        pyro.deterministic("mu2", 2 * mu)
        with pyro.plate("data", n_data or len(y), subsample_size=len(y)):
            pyro.sample("y", pd.Normal(mu, SIGMA), obs=y)

    idata = nuts(det_model, Y, backend="pyro", num_chains=1, num_warmup=30, num_samples=20,
                 progress_bar=False)
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert list(idata.posterior_predictive.data_vars) == ["y"]
    assert math.isfinite(loo(idata).elpd_loo)
    _, guide = conjugate("pyro")
    assert fit(det_model, guide, Y, options=SVIOptions(backend="pyro", epochs=1,
                                                       batch_size=10)).epochs == 1

    model, guide = conjugate("numpyro")
    weights = np.linspace(0.5, 1.5, len(Y))
    weighted = nh.scale(model, scale=weights)  # a per-datapoint weight: an array scale
    assert nuts(weighted, Y, num_chains=1, num_warmup=20, num_samples=10,
                progress_bar=False).posterior["mu"].shape == (1, 10)
    r = fit(model, guide, Y, options=SVIOptions(epochs=2, batch_size=30))
    assert nuts(model, Y, num_chains=1, num_warmup=20, num_samples=10, progress_bar=False,
                params=r.params).posterior["mu"].shape == (1, 10)

    def log_scale_guide(y, n_data=None):
        log_s = pyro.param("log_s", torch.tensor(0.0))
        pyro.sample("mu", pd.Normal(POST_MEAN, log_s.exp()))

    pmodel, _ = conjugate("pyro")
    res = importance_sampling(pmodel, log_scale_guide, [((Y,), {})], 100, backend="pyro",
                              plate=None, params={"log_s": math.log(EXACT["mu_scale"])})
    assert abs(res.log_px[0] - exact_log_evidence(Y)) < 1e-3
