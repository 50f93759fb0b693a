"""Data-parallel fit(): two JAX devices and two torch.distributed ranks give the one-process
answer (up to the order of floating-point sums), and bad configurations are refused."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from varbayes.inference.vi import data_parallel
from varbayes.inference.vi.checkpoint import load_checkpoint

WORKER = str(Path(__file__).with_name("worker.py"))
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("VARBAYES_LAUNCH_ARGV", None)
    return env


def _train(tmp: Path, name: str, backend: str, epochs: int, n: int, *, devices: int = 1,
           ranks: int = 1, elbo: str = "trace", compiler: str = "none"):
    """Run the worker; return its checkpoint's (arrays, header)."""
    ckpt = tmp / f"{name}.npz"
    args = [WORKER, backend, str(devices), str(epochs), str(n), "50", elbo, compiler, str(ckpt)]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=_env(**TWO_DEVICES), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(ckpt)


def _assert_same(a, b, rtol: float) -> None:
    (arrays_a, head_a), (arrays_b, head_b) = a, b
    assert sorted(arrays_a) == sorted(arrays_b)
    assert any(k.startswith(("optim/", "state/")) for k in arrays_a)  # optimizer state too
    for k in arrays_a:
        x, y = np.asarray(arrays_a[k], np.float64), np.asarray(arrays_b[k], np.float64)
        scale = max(np.abs(x).max(), 1e-30)
        assert np.abs(x - y).max() <= rtol * scale, k
    for k, v in head_a["history"].items():
        if k != "seconds":
            np.testing.assert_allclose(head_b["history"][k], v, rtol=rtol)


def _differs(a, b) -> bool:
    return any(not np.allclose(a[0][k], b[0][k], rtol=1e-3) for k in a[0])


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["trace", "meanfield", "dreg"])
def test_one_numpyro_step_on_two_devices_is_the_one_device_step(tmp_path, elbo):
    one = _train(tmp_path, "one", "numpyro", 1, 50, elbo=elbo)
    two = _train(tmp_path, "two", "numpyro", 1, 50, devices=2, elbo=elbo)
    _assert_same(one, two, 1e-5)


@pytest.mark.slow
def test_a_numpyro_fit_on_two_devices_ends_where_one_device_does(tmp_path):
    one = _train(tmp_path, "one", "numpyro", 4, 200)
    two = _train(tmp_path, "two", "numpyro", 4, 200, devices=2)
    _assert_same(one, two, 1e-4)
    assert _differs(one, _train(tmp_path, "short", "numpyro", 3, 200))  # it tells runs apart


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["trace", "meanfield", "iwae", "dreg"])
def test_one_pyro_step_on_two_gloo_ranks_is_the_one_process_step(tmp_path, elbo):
    one = _train(tmp_path, "one", "pyro", 1, 50, elbo=elbo)
    two = _train(tmp_path, "two", "pyro", 1, 50, ranks=2, elbo=elbo)
    _assert_same(one, two, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("compiler", ["none", "torchscript"])
def test_a_pyro_fit_on_two_ranks_ends_where_one_process_does(tmp_path, compiler):
    one = _train(tmp_path, "one", "pyro", 4, 200, compiler=compiler)
    two = _train(tmp_path, "two", "pyro", 4, 200, ranks=2, compiler=compiler)
    _assert_same(one, two, 1e-4)


# ------------------------------------------------------- the draws, without processes

def _guide(x, n_data=None):
    import pyro
    import pyro.distributions as dist

    with pyro.plate("data", n_data or len(x), subsample=torch.arange(len(x))):
        loc = x[:, :2] * 0.5
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        cov = torch.eye(3) + 0.5
        pyro.sample("w", dist.MultivariateNormal(x[:, :3], covariance_matrix=cov))
        pyro.sample("v", dist.LowRankMultivariateNormal(x[:, :3], torch.ones(3, 2),
                                                        torch.ones(3)))
    pyro.sample("g", dist.Normal(torch.zeros(4), 1.0).to_event(1))  # global: alike


@pytest.mark.parametrize("world", [2, 4])
def test_each_rank_draws_its_rows_of_the_one_process_draw(world):
    from pyro import poutine

    x = torch.randn(8, 3)
    guide = functools.partial(_guide, n_data=80)
    torch.manual_seed(1)
    full = poutine.trace(guide).get_trace(x).nodes
    m = 8 // world
    for r in range(world):
        torch.manual_seed(1)
        part = poutine.trace(data_parallel.rank_draws(guide, 80, m, r, world)).get_trace(
            x[r * m:(r + 1) * m]).nodes
        for site in ("z", "w", "v"):
            torch.testing.assert_close(part[site]["value"],
                                       full[site]["value"][r * m:(r + 1) * m])
        torch.testing.assert_close(part["g"]["value"], full["g"]["value"])
    assert data_parallel._NOISE_MODULES  # and the patch is gone afterwards:
    import torch.distributions.normal as normal
    import torch.distributions.utils as utils

    assert normal._standard_normal is utils._standard_normal
    assert utils._standard_normal.__module__ == "torch.distributions.utils"


def test_a_site_drawn_otherwise_is_named_in_a_warning():
    import pyro
    import pyro.distributions as dist
    from pyro import poutine

    def guide(x, n_data=None):
        with pyro.plate("data", n_data, subsample=torch.arange(len(x))):
            pyro.sample("u", dist.Uniform(x, x + 1))

    with pytest.warns(UserWarning, match="site 'u' .*Uniform"):
        poutine.trace(data_parallel.rank_draws(functools.partial(guide, n_data=40), 40, 4, 0,
                                               2)).get_trace(torch.zeros(4))
