"""PPCA as a NumPyro model+guide pair; sites ``z`` then ``x`` under the plate ``data``."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from varbayes.models.ppca.exact import PPCA


def model(p: PPCA, x: jnp.ndarray) -> None:
    """z ~ N(0, I_K), x | z ~ N(W z + b, σ² I_D); x (M, D)."""
    M, K = x.shape[0], p.W.shape[1]
    with numpyro.plate("data", M):
        z = numpyro.sample("z", dist.Normal(jnp.zeros((M, K)), 1.0).to_event(1))
        numpyro.sample("x", dist.Normal(z @ jnp.asarray(p.W).T + p.b, p.sigma).to_event(1),
                       obs=x)


def guide(p: PPCA, x: jnp.ndarray) -> None:
    """q(z|x) = N(A x + c, diag s²); x (M, D)."""
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("z", dist.Normal(x @ jnp.asarray(p.A).T + p.c, p.s).to_event(1))
