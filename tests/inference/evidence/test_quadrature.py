"""Quadrature against PPCA's closed-form log p(x) (latent size 1 and 2)."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.evidence.quadrature import quadrature
from varbayes.inference.evidence.sites import numpyro_log_joint
from varbayes.models.errors import VarbayesError
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate


@pytest.mark.parametrize("K", [1, 2])
def test_quadrature_matches_closed_form(K):
    import jax.numpy as jnp

    from varbayes.models.ppca import numpyro_model as m

    p = random_ppca(D=4, K=K, sigma=0.3, seed=K)
    x, _ = simulate(p, 6, seed=5)
    lj = numpyro_log_joint(m.model, "z", p, jnp.asarray(x, dtype=jnp.float32))
    res = quadrature(lj, K, len(x), n=200 if K == 2 else 400)
    np.testing.assert_allclose(res.log_px, exact_log_evidence(p, x), atol=1e-4)
    assert np.all(res.refinement < 1e-4)
    with pytest.raises(VarbayesError, match="dimension 1 or 2, got 3"):
        quadrature(lj, 3, len(x))
