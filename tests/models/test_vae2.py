"""The two-stochastic-layer VAE: one weight layout, the same densities in both backends, and
IS, AIS and the importance-weighted objectives working on it."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from varbayes.models.errors import VarbayesError
from varbayes.models.vae2 import VAE2Config, init_weights, n_params
from varbayes.models.vae2 import numpyro_model as nm
from varbayes.models.vae2 import pyro_model as pm
from varbayes.models.vae2.config import validate

CFG = VAE2Config(x_dim=20, z_dims=(6, 3), hidden=((16, 16), (8, 8)))


def _x(n=40, seed=0):
    return (np.random.default_rng(seed).random((n, CFG.x_dim)) < 0.3).astype(np.float32)


def test_the_paper_architecture_and_one_layout_for_both_backends():
    paper = VAE2Config(x_dim=784)
    w = init_weights(paper, 0)
    assert w["q1.enc.0.weight"].shape == (200, 784) and w["q1.enc.loc.weight"].shape == (100, 200)
    assert w["q2.enc.1.weight"].shape == (100, 100) and w["q2.enc.loc.weight"].shape == (50, 100)
    assert w["p1.enc.0.weight"].shape == (100, 50) and w["p1.enc.loc.weight"].shape == (100, 100)
    assert w["px.dec.out.weight"].shape == (784, 200)
    assert n_params(paper) == sum(v.size for v in w.values())
    pw, nw = pm.weights(pm.build(CFG, seed=3)), nm.weights(nm.build(CFG, seed=3))
    assert sorted(pw) == sorted(nw) == sorted(init_weights(CFG, 3))
    for k in pw:
        np.testing.assert_array_equal(pw[k], nw[k])
    assert not np.array_equal(pw["q2.enc.0.weight"], pm.weights(pm.build(CFG, seed=4))[
        "q2.enc.0.weight"])


def test_bad_configurations_are_named():
    with pytest.raises(VarbayesError, match="z_dims"):
        validate(CFG._replace(z_dims=(6, 0)))
    with pytest.raises(VarbayesError, match="hidden"):
        validate(CFG._replace(hidden=((16,), ())))


def _log_densities_pyro(vae, x, z1, z2):
    import torch
    from pyro import poutine

    data = {"z1": torch.tensor(z1), "z2": torch.tensor(z2)}
    m = poutine.trace(poutine.condition(pm.model, data=data)).get_trace(vae, torch.tensor(x))
    g = poutine.trace(poutine.condition(pm.guide, data=data)).get_trace(vae, torch.tensor(x))
    return float(m.log_prob_sum()), float(g.log_prob_sum())


def _log_densities_numpyro(vae, x, z1, z2):
    from numpyro import handlers
    from numpyro.infer.util import log_density

    data = {"z1": z1, "z2": z2}
    lp, _ = log_density(handlers.condition(nm.model, data=data), (vae, x), {}, {})
    lq, _ = log_density(handlers.condition(nm.guide, data=data), (vae, x), {}, {})
    return float(lp), float(lq)


@pytest.mark.slow
def test_both_backends_give_the_same_log_densities_on_the_same_weights_and_values():
    x = _x(7)
    rng = np.random.default_rng(1)
    z1 = rng.standard_normal((7, 6)).astype(np.float32)
    z2 = rng.standard_normal((7, 3)).astype(np.float32)
    ours = _log_densities_pyro(pm.build(CFG, seed=2), x, z1, z2)
    theirs = _log_densities_numpyro(nm.build(CFG, seed=2), x, z1, z2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    # and the model is the product of its three conditionals: p(z2) by hand
    import torch
    from pyro import poutine

    t = poutine.trace(poutine.condition(pm.model, data={
        "z1": torch.tensor(z1), "z2": torch.tensor(z2)})).get_trace(pm.build(CFG, seed=2),
                                                                    torch.tensor(x))
    t.compute_log_prob()
    want = -0.5 * (z2 ** 2).sum() - 0.5 * z2.size * np.log(2 * np.pi)
    assert float(t.nodes["z2"]["log_prob_sum"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_is_and_ais_agree_on_it_and_lie_above_the_elbo(backend):
    from varbayes.inference.evidence import ais, importance
    from varbayes.inference.evidence.batches import batches

    mod = {"pyro": pm, "numpyro": nm}[backend]
    x = _x(40)
    b = batches((x,), 20, backend=backend, static=(mod.build(CFG, seed=1),))
    r = importance.importance_sampling(mod.model, mod.guide, b, 500, backend=backend, seed=1)
    a = ais.ais(mod.model, mod.guide, b, ais.AISOptions(n_steps=100, chains=4, n_leapfrog=4,
                                                          init="guide"),
                backend=backend, seed=1)
    assert r.log_px.mean() > r.elbo.mean() + 0.2  # two layers leave a gap the bound closes
    diff = np.asarray(r.log_px) - np.asarray(a.log_px)
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff)) + 0.05, diff.mean()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_an_iwae_fit_raises_the_bound(backend):
    from varbayes.inference.vi.svi import SVIOptions, fit

    mod = {"pyro": pm, "numpyro": nm}[backend]
    vae = mod.build(CFG, seed=1)
    x = _x(400)
    r = fit(functools.partial(mod.model, vae), functools.partial(mod.guide, vae), x,
            options=SVIOptions(backend=backend, objective="dreg", particles=5, epochs=4,
                               batch_size=50, lr=1e-2, is_every=4, is_particles=50),
            eval_sets={"test": _x(100, seed=5)})
    h = r.history
    assert h["objective"][-1] > h["objective"][0] + 1.0
    assert h["test_is"][-1] > h["test_elbo"][-1]
    trained = mod.with_params(vae, r.params)
    assert sorted(mod.weights(trained)) == sorted(mod.weights(vae))
    assert not np.array_equal(mod.weights(trained)["px.dec.out.bias"],  # (Pyro trains the
                              init_weights(CFG, 1)["px.dec.out.bias"])  # modules in place)
    p = mod.decode(trained, np.zeros((3, CFG.z_dims[0]), np.float32))
    assert p.shape == (3, CFG.x_dim) and ((p > 0) & (p < 1)).all()
