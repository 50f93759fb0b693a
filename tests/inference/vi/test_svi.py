"""fit(): training rises, resumes exactly, stops cleanly on NaN, and checkpoints safely."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from varbayes.inference.data import datasets
from varbayes.inference.vi.checkpoint import load_checkpoint
from varbayes.inference.vi.svi import (
    SVIOptions,
    TrainingDivergedError,
    fit,
    jit_trace_meanfield_elbo,
)
from varbayes.models.errors import VarbayesError
from varbayes.models.vae import numpyro_model as numpyro_vae
from varbayes.models.vae import pyro_model as pyro_vae
from varbayes.models.vae.config import VAEConfig

BACKENDS = {"pyro": pyro_vae, "numpyro": numpyro_vae}
CFG = VAEConfig(x_dim=64, z_dim=4, hidden=(32,))


@pytest.fixture(scope="module")
def digits():
    d = datasets.load("digits")
    rng = np.random.default_rng(0)
    test = datasets.dynamic_binarize(d.x_test[:200], rng)
    return d.x_train[:400], test


def binarize(batch, rng):
    return (datasets.dynamic_binarize(batch[0], rng),)


def _fit(backend, train, test, tmp_path=None, cfg=CFG, resume=False, transform=binarize,
         **opts):
    mod = BACKENDS[backend]
    vae = mod.build(cfg, seed=0)
    options = SVIOptions(backend=backend, batch_size=50, **opts)
    ckpt = None if tmp_path is None else tmp_path / "checkpoint.npz"
    return fit(functools.partial(mod.model, vae), functools.partial(mod.guide, vae), (train,),
               options=options, eval_sets={"test": (test,)}, transform=transform,
               checkpoint=ckpt, resume=resume, meta={"vae": json.loads(cfg.to_json())},
               eval_hide=("theta_prior",))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_elbo_rises(digits, backend, elbo):
    train, test = digits
    r = _fit(backend, train, test, epochs=6, elbo=elbo, lr=3e-3)
    curve = r.history["test_elbo"]
    assert len(curve) == 6 and r.epochs == 6
    assert curve[-1] > curve[0] + 3.0, curve  # nats per datapoint
    assert r.history["objective"][-1] > r.history["objective"][0]
    assert r.n_params == 64 * 32 + 32 + 2 * (32 * 4 + 4) + 4 * 32 + 32 + 32 * 64 + 64


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_particles_adagrad_and_weight_decay(digits, backend):
    train, test = digits
    cfg = CFG._replace(prior_precision=1.0)
    r = _fit(backend, train, test, cfg=cfg, epochs=2, particles=3, optimizer="adagrad", lr=0.05)
    assert all(np.isfinite(r.history["test_elbo"]))


def _flat(backend, params):
    if backend == "pyro":
        return {k: v.numpy() for k, v in params.items()}
    import jax

    return {str(i): np.asarray(v) for i, v in enumerate(jax.tree_util.tree_leaves(params))}


@pytest.mark.slow
@pytest.mark.parametrize("backend, elbo, jit, compiler", [
    ("pyro", "meanfield", True, "auto"), ("pyro", "trace", True, "auto"),
    ("pyro", "meanfield", True, "inductor"), ("pyro", "meanfield", False, "auto"),
    ("numpyro", "meanfield", True, "auto")])
def test_resume_equals_uninterrupted(digits, backend, elbo, jit, compiler, tmp_path):
    """Bit-identical parameters after 2 epochs + resume to 3 and after 3 in one go."""
    train, test = digits
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kw = dict(elbo=elbo, jit=jit, compiler=compiler)
    full = _fit(backend, train, test, tmp_path / "a", epochs=3, **kw)
    first = _fit(backend, train, test, tmp_path / "b", epochs=2, **kw)
    assert first.epochs == 2
    resumed = _fit(backend, train, test, tmp_path / "b", epochs=3, resume=True, **kw)
    assert resumed.start_epoch == 2 and resumed.epochs == 3
    a, b = _flat(backend, full.params), _flat(backend, resumed.params)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed.history["test_elbo"] == full.history["test_elbo"]
    _, header = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert header["epoch"] == 3 and len(header["history"]["test_elbo"]) == 3


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    train, test = digits
    calls = {"n": 0}

    def poison(batch, rng):
        calls["n"] += 1
        x = binarize(batch, rng)[0]
        if calls["n"] > 8 + 3:  # 8 steps per epoch: NaN in the middle of epoch 2
            x = x.copy()
            x[0, 0] = np.nan
        return (x,)

    for backend in ("numpyro", "pyro"):
        calls["n"] = 0
        d = tmp_path / backend
        d.mkdir()
        with pytest.raises(TrainingDivergedError, match=r"epoch 2.*last good checkpoint \(1 "):
            _fit(backend, train, test, d, epochs=4, transform=poison)
        _, header = load_checkpoint(d / "checkpoint.npz")
        assert header["epoch"] == 1
        assert np.isfinite(header["history"]["test_elbo"]).all()


@pytest.mark.slow
def test_checkpoint_mismatch_and_corruption(digits, tmp_path):
    train, test = digits
    _fit("numpyro", train, test, tmp_path, epochs=1)
    with pytest.raises(VarbayesError, match="numpyro backend but this run uses pyro"):
        _fit("pyro", train, test, tmp_path, epochs=2, resume=True)
    with pytest.raises(VarbayesError, match=r"other options.*lr"):
        _fit("numpyro", train, test, tmp_path, epochs=2, resume=True, lr=0.1)
    with pytest.raises(VarbayesError, match=r"another configuration.*vae"):
        _fit("numpyro", train, test, tmp_path, cfg=CFG._replace(z_dim=5), epochs=2, resume=True)
    ckpt = tmp_path / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(VarbayesError, match="corrupt"):
        _fit("numpyro", train, test, tmp_path, epochs=2, resume=True)
    with pytest.raises(VarbayesError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_bad_options(digits):
    train, test = digits
    for bad, match in [(dict(epochs=0), "--epochs"), (dict(particles=0), "--particles"),
                       (dict(lr=-1.0), "--lr"), (dict(elbo="renyi"), "--elbo"),
                       (dict(optimizer="sgd"), "--optimizer"),
                       (dict(time_limit=0.0), "--time-limit")]:
        with pytest.raises(VarbayesError, match=match):
            _fit("numpyro", train, test, **bad)


def test_fixed_jit_meanfield_elbo_compiles_once():
    """Pyro 1.9's JitTraceMeanField_ELBO re-traces every call; ours compiles once and
    computes the same loss as the uncompiled TraceMeanField_ELBO."""
    import pyro
    import torch

    cfg = VAEConfig(x_dim=12, z_dim=2, hidden=(5,))
    vae = pyro_vae.build(cfg, seed=0)
    x = torch.as_tensor((np.random.default_rng(0).random((8, 12)) < 0.5).astype(np.float32))
    model = functools.partial(pyro_vae.model, vae, n_data=80)
    guide = functools.partial(pyro_vae.guide, vae, n_data=80)
    pyro.clear_param_store()
    elbo = jit_trace_meanfield_elbo(ignore_jit_warnings=True)
    with pyro.validation_enabled(False):
        elbo.differentiable_loss(model, guide, x)
        compiled = elbo._differentiable_loss
        for _ in range(3):
            elbo.differentiable_loss(model, guide, x)
        assert elbo._differentiable_loss is compiled
        assert len(compiled.compiled) == 1
        torch.manual_seed(3)
        jitted = float(elbo.differentiable_loss(model, guide, x).detach())
        torch.manual_seed(3)
        plain = float(pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x)
                      .detach())
    assert jitted == pytest.approx(plain, rel=1e-5)


def _global_local_pair(backend):
    """θ ~ N(0, 1) global, zᵢ ~ N(θ, 1), xᵢ ~ N(zᵢ, 1); Delta guides, so the ELBO is
    deterministic: Σᵢ [log N(xᵢ; zᵢ, 1) + log N(zᵢ; θ, 1)] + log N(θ; 0, 1)."""
    if backend == "pyro":
        import pyro as ppl
        import pyro.distributions as dist
        import torch

        def plate(n_data, M):
            return ppl.plate("data", n_data or M, subsample=torch.arange(M))
    else:
        import numpyro as ppl
        import numpyro.distributions as dist

        def plate(n_data, M):  # the tests below never subsample (batch = the whole set)
            return ppl.plate("data", n_data or M, subsample_size=M)

    def model(x, n_data=None):
        theta = ppl.sample("theta", dist.Normal(0.0, 1.0))
        M = x.shape[0]
        with plate(n_data, M):
            z = ppl.sample("z", dist.Normal(theta, 1.0))
            ppl.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, n_data=None):
        t = ppl.param("t", 0.5 + 0 * x[0])
        ppl.sample("theta", dist.Delta(t))
        M = x.shape[0]
        with plate(n_data, M):
            ppl.sample("z", dist.Delta(0.3 * x))
    return model, guide


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_evaluation_counts_global_sites_once(backend):
    """The evaluated ELBO of a set does not depend on the evaluation batch size: the global
    θ term is counted once per set, not once per evaluation batch."""
    from scipy.stats import norm

    x = np.linspace(-1, 1, 12).astype(np.float32)
    model, guide = _global_local_pair(backend)
    scores = []
    for eval_batch in (12, 5, 1):
        options = SVIOptions(backend=backend, epochs=1, batch_size=12, lr=1e-12,
                             eval_batch_size=eval_batch, jit=False)
        r = fit(model, guide, (x,), options=options, eval_sets={"all": (x,)})
        scores.append(r.history["all_elbo"][0])
    t, z = 0.5, 0.3 * x.astype(np.float64)
    local = (norm.logpdf(x, z, 1).sum() + norm.logpdf(z, t, 1).sum()) / 12
    exact = local + norm.logpdf(t) / 12
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-4)
    # eval_global="drop": θ still comes from the guide (t = 0.5), its own terms are left out
    options = SVIOptions(backend=backend, epochs=1, batch_size=12, lr=1e-12, eval_batch_size=5,
                         jit=False)
    r = fit(model, guide, (x,), options=options, eval_sets={"all": (x,)}, eval_global="drop")
    assert r.history["all_elbo"][0] == pytest.approx(local, abs=1e-4)
    with pytest.raises(VarbayesError, match="eval_global"):
        fit(model, guide, (x,), options=options, eval_global="twice")


def test_pyro_params_created_late_are_refused():
    import pyro
    import pyro.distributions as dist
    import torch

    calls = {"n": 0}

    def model(x, n_data=None):
        with pyro.plate("data", n_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0), obs=x)

    def guide(x, n_data=None):
        calls["n"] += 1
        if calls["n"] > 3:  # the pair check, two registration traces; then the first step
            pyro.param("late", torch.tensor(1.0))

    x = np.zeros(8, np.float32)
    options = SVIOptions(backend="pyro", epochs=1, batch_size=4, jit=False)
    with pytest.raises(VarbayesError, match="late"):
        fit(model, guide, (x,), options=options)
