"""varbayes: variational inference done right, in Pyro and NumPyro side by side.

The public API for any model+guide pair: ``from varbayes import fit, nuts, ...``. Importing
``varbayes`` is cheap: torch, Pyro, JAX and NumPyro load only when a name that needs them is
used. The packages are :mod:`varbayes.models` (the models, their math and their ground truth;
it never imports inference) and :mod:`varbayes.inference` (the algorithms, the model-family
workflows and the CLI); ``docs/architecture.md`` gives the layout and its rules.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (loaded on first use).
_API = {
    # errors and backends
    "VarbayesError": "varbayes.models.errors",
    "BACKENDS": "varbayes.inference.backends",
    # SVI
    "fit": "varbayes.inference.vi.svi",
    "SVIOptions": "varbayes.inference.vi.svi",
    "FitResult": "varbayes.inference.vi.svi",
    "TrainingDivergedError": "varbayes.inference.vi.svi",
    "load_checkpoint": "varbayes.inference.vi.checkpoint",
    # MCMC
    "nuts": "varbayes.inference.mcmc.nuts",
    # marginal likelihood
    "batches": "varbayes.inference.evidence.batches",
    "importance_sampling": "varbayes.inference.evidence.importance",
    "ISResult": "varbayes.inference.evidence.importance",
    "log_mean_exp": "varbayes.inference.evidence.importance",
    "effective_sample_size": "varbayes.inference.evidence.importance",
    "pareto_k": "varbayes.inference.evidence.importance",
    "numpyro_log_joint": "varbayes.inference.evidence.sites",
    "quadrature": "varbayes.inference.evidence.quadrature",
    "QuadratureResult": "varbayes.inference.evidence.quadrature",
    "ais": "varbayes.inference.evidence.ais",
    "AISOptions": "varbayes.inference.evidence.ais",
    "AISResult": "varbayes.inference.evidence.ais",
    "hmc_evidence": "varbayes.inference.evidence.hmc",
    "HMCEvidenceOptions": "varbayes.inference.evidence.hmc",
    "HMCEvidenceResult": "varbayes.inference.evidence.hmc",
    # arviz workflow
    "from_draws": "varbayes.inference.workflow.diagnostics",
    "summary": "varbayes.inference.workflow.diagnostics",
    "gate": "varbayes.inference.workflow.diagnostics",
    "Gate": "varbayes.inference.workflow.diagnostics",
    "loo": "varbayes.inference.workflow.diagnostics",
    "LooReport": "varbayes.inference.workflow.diagnostics",
    "compare": "varbayes.inference.workflow.diagnostics",
    "plot_diagnostics": "varbayes.inference.workflow.diagnostics",
    "plot_ppc": "varbayes.inference.workflow.diagnostics",
    "q_khat": "varbayes.inference.workflow.diagnostics",
    "QCheck": "varbayes.inference.workflow.diagnostics",
    "guide_draws": "varbayes.inference.workflow.predictive",
    "save_inferencedata": "varbayes.inference.io",
    "load_inferencedata": "varbayes.inference.io",
    # data
    "load_dataset": "varbayes.inference.data.datasets",
    "Dataset": "varbayes.inference.data.datasets",
}
#: Public names whose definition has another name in its module.
_RENAMED = {"load_dataset": "load"}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562) and cache the name here."""
    if name not in _API:
        raise AttributeError(f"module 'varbayes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
