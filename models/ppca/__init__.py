"""Probabilistic PCA, a linear-Gaussian latent model with closed-form evidence.

z_i ~ N(0, I_K), x_i | z_i ~ N(W z_i + b, σ² I_D), so x_i ~ N(b, W Wᵀ + σ² I_D), and the
posterior is q*(z|x) = N(M⁻¹ Wᵀ (x - b), σ² M⁻¹) with M = Wᵀ W + σ² I_K (Tipping & Bishop
1999). It is the ground truth for the evidence estimators: with the exact posterior as the
guide every importance weight equals p(x), and a widened guide makes a loose bound.
"""

from varbayes.models.ppca.exact import (
    PPCA,
    exact_log_evidence,
    exact_posterior,
    random_ppca,
    simulate,
)

__all__ = ["PPCA", "exact_log_evidence", "exact_posterior", "random_ppca", "simulate"]
