"""PPCA as a Pyro model+guide pair; the same sites, signature and plate as NumPyro's."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from varbayes.models.ppca.exact import PPCA


def _t(a: object) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def model(p: PPCA, x: torch.Tensor) -> None:
    """z ~ N(0, I_K), x | z ~ N(W z + b, σ² I_D); x (M, D)."""
    M, K = x.shape[0], p.W.shape[1]
    with pyro.plate("data", M):
        z = pyro.sample("z", dist.Normal(torch.zeros(M, K), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ _t(p.W).T + _t(p.b), p.sigma).to_event(1), obs=x)


def guide(p: PPCA, x: torch.Tensor) -> None:
    """q(z|x) = N(A x + c, diag s²); x (M, D)."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ _t(p.A).T + _t(p.c), _t(p.s)).to_event(1))
