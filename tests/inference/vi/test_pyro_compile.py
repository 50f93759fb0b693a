"""The inductor-compiled Pyro loss equals the eager one, and falls back where it cannot."""

from __future__ import annotations

import functools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from varbayes.inference.vi.pyro_compile import CompileError, compile_loss
from varbayes.inference.vi.svi import (
    INDUCTOR_MIN_STEPS,
    SVIOptions,
    check_options,
    pyro_compiler,
    pyro_elbo,
    pyro_loss,
)
from varbayes.models.errors import VarbayesError
from varbayes.models.vae import pyro_model as pyro_vae
from varbayes.models.vae.config import VAEConfig

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow


def _vae_pair():
    cfg = VAEConfig(x_dim=12, z_dim=2, hidden=(5,))
    vae = pyro_vae.build(cfg, seed=0)
    x = torch.as_tensor((np.random.default_rng(0).random((8, 12)) < 0.5).astype(np.float32))
    return (functools.partial(pyro_vae.model, vae, n_data=80),
            functools.partial(pyro_vae.guide, vae, n_data=80), x)


def _scale_pair():
    """A constrained param (a positive scale) and a latent without an analytic KL."""
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.StudentT(4.0, mu, 1.0), obs=y)

    def guide(y):
        loc = pyro.param("loc", torch.tensor(0.3))
        scale = pyro.param("scale", torch.tensor(0.5), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    return model, guide, torch.linspace(-1.0, 2.0, 9)


def _params(model, guide, *args):
    pyro.clear_param_store()
    poutine.trace(guide).get_trace(*args)
    poutine.trace(model).get_trace(*args)
    named = dict(pyro.get_param_store().named_parameters())
    return [named[n] for n in sorted(named)]


def _value_and_grads(loss, params, args, seed):
    for p in params:
        p.grad = None
    torch.manual_seed(seed)
    value = loss(*args)
    value.backward()
    return float(value.detach()), [p.grad.clone() for p in params]


@pytest.mark.parametrize("pair, elbo, particles", [
    (_scale_pair, "trace", 3), (_scale_pair, "meanfield", 1)])
def test_compiled_loss_equals_eager_on_the_same_weights_and_noise(pair, elbo, particles):
    model, guide, x = pair()
    params = _params(model, guide, x)
    options = SVIOptions(backend="pyro", elbo=elbo, particles=particles)
    with pyro.validation_enabled(False):
        eager = functools.partial(pyro_elbo(options, jit=False).differentiable_loss, model,
                                  guide)
        compiled = compile_loss(pyro_elbo(options, jit=False), model, guide, params)
        for seed in (1, 2):  # the second call runs the cached graph
            want, want_grads = _value_and_grads(eager, params, (x,), seed)
            got, got_grads = _value_and_grads(compiled, params, (x,), seed)
            assert got == pytest.approx(want, rel=1e-5)
            for g, w in zip(got_grads, want_grads, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
        # an optimizer update is seen: the graph reads the param leaves, not copies
        with torch.no_grad():
            for p in params:
                p.add_(0.1)
        want, _ = _value_and_grads(eager, params, (x,), 3)
        got, _ = _value_and_grads(compiled, params, (x,), 3)
        assert got == pytest.approx(want, rel=1e-5)


def test_the_vae_loss_per_batch_shape():
    """TraceMeanField_ELBO (the VAE's default): each new batch shape gets its own graph."""
    model, guide, x = _vae_pair()
    params = _params(model, guide, x)
    options = SVIOptions(backend="pyro")
    with pyro.validation_enabled(False):
        eager = functools.partial(pyro_elbo(options, jit=False).differentiable_loss, model,
                                  guide)
        compiled = compile_loss(pyro_elbo(options, jit=False), model, guide, params)
        for rows in (8, 5, 8):
            want, want_grads = _value_and_grads(eager, params, (x[:rows],), rows)
            got, got_grads = _value_and_grads(compiled, params, (x[:rows],), rows)
            assert got == pytest.approx(want, rel=1e-5)
            for g, w in zip(got_grads, want_grads, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def _changing_pair():
    """Structure that changes after the first call (as Python control flow on a tensor
    value can): a trace fixes the first call's branch."""
    calls = [0]

    def model(y):
        calls[0] += 1
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        shift = 5.0 if calls[0] == 1 else -5.0
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu + shift, 1.0), obs=y)

    def guide(y):
        pyro.sample("mu", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    return model, guide, torch.zeros(4)


def test_changing_structure_falls_back_to_torchscript():
    options = SVIOptions(backend="pyro", elbo="trace")
    with pyro.validation_enabled(False):
        model, guide, y = _changing_pair()
        compiled = compile_loss(pyro_elbo(options, jit=False), model, guide, [])
        with pytest.raises(CompileError, match="differs from the eager one"):
            compiled(y)
        model, guide, y = _changing_pair()
        loss = pyro_loss(options, model, guide, [], "inductor")
        with pytest.warns(UserWarning, match="training with TorchScript instead"):
            value = loss(y)
        torch.manual_seed(0)
        want = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, y)
        torch.manual_seed(0)
        assert float(loss(y)) == pytest.approx(float(want), rel=1e-5)  # TorchScript now
    assert torch.isfinite(value)


def test_the_compiler_option():
    long, short = INDUCTOR_MIN_STEPS, INDUCTOR_MIN_STEPS - 1
    assert pyro_compiler(SVIOptions(backend="pyro"), long) == "inductor"
    assert pyro_compiler(SVIOptions(backend="pyro"), short) == "torchscript"
    assert pyro_compiler(SVIOptions(backend="pyro", compiler="inductor"), 1) == "inductor"
    assert pyro_compiler(SVIOptions(backend="pyro", compiler="torchscript"), long) == \
        "torchscript"
    assert pyro_compiler(SVIOptions(backend="pyro", jit=False, compiler="inductor"), 1) == \
        "none"
    with pytest.raises(VarbayesError, match="--compiler must be one of"):
        check_options(SVIOptions(compiler="xla"))
