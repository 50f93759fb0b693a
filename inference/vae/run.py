"""The VAE run folder: what ``varbayes vae train --out RUN`` writes and every other VAE
command reads.

A run folder holds :data:`CHECKPOINT` (the training state, the flat decoder and encoder
weights under ``export/`` and, for a ``--bayesian`` run, σ of q(θ) under ``export/sigma/``,
with a JSON header whose ``meta`` has the model configuration ``vae`` (``vae2`` for a VAE
with two stochastic layers), the data description ``run`` and, for a Bayesian run,
``bayes``), ``metrics.json`` and the figures. This module is the one place that knows that
format: the file name, the header check, the exported arrays, the data a run was trained
on, the NumPyro twin of a run and its batches.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.backends import as_array, model_module
from varbayes.inference.data import datasets
from varbayes.inference.evidence.batches import Batch, batches
from varbayes.inference.vi.checkpoint import load_checkpoint
from varbayes.models.errors import VarbayesError, check
from varbayes.models.vae.config import VAEConfig, check_data, condition_vector
from varbayes.models.vae2.config import VAE2Config

CHECKPOINT = "checkpoint.npz"
"""The checkpoint's file name inside a run folder."""
SIGMA = "sigma/"
"""Prefix of σ of q(θ) among a Bayesian run's exported arrays (``export/sigma/<name>``)."""
BINARIZE = ("auto", "dynamic", "static", "none")
"""``--binarize`` choices: how grey images become the Bernoulli decoder's 0/1 targets."""
_TRAIN_HINT = "pass the --out folder of a 'varbayes vae train' run"


# ------------------------------------------------------------------------------ the data

class RunData(NamedTuple):
    """The arrays one run trains and evaluates on, after subsetting and checks."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    """Evaluation targets: binarized once (seeded) unless ``binarize == "none"``."""
    y_test: np.ndarray | None
    x_train_eval: np.ndarray
    """A fixed training subset (as large as the test set), binarized like the test set."""
    image_shape: tuple[int, int]
    binarize: str
    """``dynamic``, ``static`` or ``none`` (resolved from ``auto``)."""
    n_classes: int


def resolve_binarize(binarize: str, decoder: str, binary: bool) -> str:
    """``auto``: dynamic for a Bernoulli decoder on grey data, else none."""
    check(binarize in BINARIZE, f"--binarize must be one of {', '.join(BINARIZE)}, got "
                                f"{binarize!r}")
    if binarize == "auto":
        return "dynamic" if decoder == "bernoulli" and not binary else "none"
    check(not (binarize != "none" and decoder == "gaussian"),
          f"--binarize {binarize} makes no sense with a Gaussian decoder: pass --binarize none")
    return binarize


def load_run_data(dataset: str, data_dir: str | None, decoder: str, binarize: str,
                  n_train: int | None, n_test: int | None, seed: int,
                  download: bool = False) -> RunData:
    """Load, subset, check and (for ``static``) binarize a dataset for one run.

    ``download`` fetches missing files from the canonical source first (verified).
    """
    d = datasets.load(dataset, data_dir, download=download)
    for flag, n in (("--n-train", n_train), ("--n-test", n_test)):
        check(n is None or n >= 1, f"{flag} must be >= 1, got {n}")
    x_tr, x_te = d.x_train[:n_train], d.x_test[:n_test]
    y_tr = None if d.y_train is None else d.y_train[:n_train]
    y_te = None if d.y_test is None else d.y_test[:n_test]
    binarize = resolve_binarize(binarize, decoder, d.binary)
    probe = VAEConfig(x_dim=x_tr.shape[1], z_dim=1, decoder=decoder)
    x_tr = check_data(x_tr, probe, f"{dataset} training data")
    x_te = check_data(x_te, probe, f"{dataset} test data")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    if binarize == "static":
        x_tr = datasets.dynamic_binarize(x_tr, rng)
    n_eval = min(len(x_tr), len(x_te))
    x_tr_eval = x_tr[:n_eval]
    if binarize == "dynamic":  # evaluation targets are drawn once, so epochs compare
        x_te = datasets.dynamic_binarize(x_te, rng)
        x_tr_eval = datasets.dynamic_binarize(x_tr_eval, rng)
    elif binarize == "static":
        x_te = datasets.dynamic_binarize(x_te, rng)
    n_classes = 0 if d.y_train is None else int(d.y_train.max()) + 1
    return RunData(x_tr, y_tr, x_te, y_te, x_tr_eval, tuple(d.image_shape), binarize,
                   n_classes)


def arrays_for(config: VAEConfig, x: np.ndarray, y: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, c): the model's batch arrays, with c built from labels or visible pixels."""
    return x, condition_vector(config, x, y)


# ------------------------------------------------------------------------------- a run

class Run(NamedTuple):
    """A trained run read back from its checkpoint (never unpickled)."""

    mod: ModuleType
    """The backend's model module, ``varbayes.models.vae.pyro_model`` or ``numpyro_model``."""
    vae: Any
    """The VAE with the trained weights (for a Bayesian run, θ at q(θ)'s mean μ)."""
    header: dict[str, Any]
    """The checkpoint header (``backend``, ``options``, ``meta``, ``history``, ...)."""
    data: RunData | None
    """The run's data (None when loaded with ``with_data=False``)."""
    sigma: dict[str, np.ndarray] | None
    """σ per decoder weight of q(θ) = N(μ, σ²) for a ``--bayesian`` run, else None."""

    @property
    def backend(self) -> str:
        """``numpyro`` or ``pyro``: the backend the run was trained with."""
        return self.header["backend"]

    @property
    def dataset(self) -> str:
        """The dataset the run was trained on."""
        return self.header["meta"]["run"]["dataset"]

    @property
    def elbo(self) -> str:
        """The training ELBO: ``trace`` (estimator A) or ``meanfield`` (B)."""
        return self.header["options"]["elbo"]


def run_meta(config: VAEConfig | VAE2Config, dataset: str, binarize: str, n_train: int | None,
             n_test: int | None, bayes: Any = None) -> dict[str, Any]:
    """The checkpoint ``meta`` of a run: the configuration ``vae`` (``vae2`` for two
    stochastic layers), the data description ``run`` (what :func:`load_run_data` needs to
    rebuild the data) and, for a Bayesian decoder, its ``bayes`` configuration."""
    meta = {"vae2" if isinstance(config, VAE2Config) else "vae": config._asdict(),
            "run": {"dataset": dataset, "binarize": binarize, "n_train": n_train,
                    "n_test": n_test}}
    if bayes is not None:
        meta["bayes"] = bayes._asdict()
    return meta


def export_arrays(weights: dict[str, np.ndarray], sigma: dict[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
    """What a run's checkpoint exports: the flat VAE weights and, for a Bayesian decoder,
    σ of q(θ) per decoder weight (read back by :func:`exported`)."""
    return {**weights, **{f"{SIGMA}{k}": v for k, v in (sigma or {}).items()}}


def is_bayesian(header: dict[str, Any]) -> bool:
    """True for a Bayesian-decoder run (a prior and a guide over the decoder weights)."""
    return "bayes" in header.get("meta", {})  # written by 'vae train --bayesian'


def two_layers(header: dict[str, Any]) -> bool:
    """True for a run of the VAE with two stochastic layers (``--stochastic-layers 2``)."""
    return "vae2" in header.get("meta", {})


def read_header(run_dir: str | Path, *, two_layer_ok: bool = False) -> dict[str, Any]:
    """The checkpoint header of a VAE run folder; one-line errors for any other folder (and
    for a two-stochastic-layer run unless ``two_layer_ok``)."""
    return _read(run_dir, two_layer_ok)[1]


def _read(run_dir: str | Path, two_layer_ok: bool) -> tuple[dict[str, np.ndarray],
                                                             dict[str, Any]]:
    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"run folder {run_dir} does not exist: {_TRAIN_HINT}")
    path = run_dir / CHECKPOINT
    check(path.is_file(), f"no {CHECKPOINT} in {run_dir}: {_TRAIN_HINT}")
    arrays, header = load_checkpoint(path)
    meta = header.get("meta", {})
    check(("vae" in meta or "vae2" in meta) and "run" in meta,
          f"{path} is not a VAE checkpoint: {_TRAIN_HINT}")
    if two_layers(header) and not two_layer_ok:
        raise VarbayesError(f"{run_dir} holds a VAE with two stochastic layers (vae train "
                            "--stochastic-layers 2), which this command does not read: "
                            "'varbayes evidence --estimators elbo,is,ais' does")
    return arrays, header


def exported(arrays: dict[str, np.ndarray]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(weights, sigma) from a checkpoint's arrays: the flat VAE weights under ``export/``
    and σ of q(θ) under ``export/sigma/`` (empty for a point-estimate run)."""
    weights, sigma = {}, {}
    for k, v in arrays.items():
        if k.startswith(f"export/{SIGMA}"):
            sigma[k[len(f"export/{SIGMA}"):]] = v
        elif k.startswith("export/"):
            weights[k[len("export/"):]] = v
    return weights, sigma


def load_run(run_dir: str | Path, data_dir: str | None = None, *,
             with_data: bool = True, two_layer_ok: bool = False) -> Run:
    """Rebuild the VAE of a run folder from its checkpoint, in the run's backend.

    ``with_data`` also loads the run's data (:class:`RunData`, as at training time, from
    ``data_dir``); without it only the model is read. A run with two stochastic layers is
    refused in one line unless ``two_layer_ok`` (its ``vae`` is then a ``VAE2``).
    """
    arrays, header = _read(run_dir, two_layer_ok)
    meta = header["meta"]
    if two_layers(header):
        config: Any = VAE2Config.from_dict(meta["vae2"])
        mod = model_module("vae2", header["backend"])
    else:
        config = VAEConfig.from_dict(meta["vae"])
        mod = model_module("vae", header["backend"])
    weights, sigma = exported(arrays)
    data = None
    if with_data:
        r = meta["run"]
        data = load_run_data(r["dataset"], data_dir, config.decoder, r["binarize"],
                             r["n_train"], r["n_test"], int(header["options"]["seed"]))
    return Run(mod, mod.build(config, weights), header, data,
               sigma if is_bayesian(header) else None)


def numpyro_twin(run: Run) -> Any:
    """The run's VAE rebuilt in NumPyro with the same weights (for a run of either backend):
    what the JAX-only algorithms (quadrature, the appendix-D estimator, grids) evaluate."""
    from varbayes.models.vae import numpyro_model

    return numpyro_model.build(run.vae.config, run.mod.weights(run.vae))


def heldout_arrays(run: Run, n_data: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, c) of the first ``n_data`` test points of the run (all when None)."""
    check(run.data is not None, "load the run with its data (load_run(..., with_data=True))")
    x, y = run.data.x_test, run.data.y_test
    n = len(x) if n_data is None else min(int(n_data), len(x))
    return arrays_for(run.vae.config, x[:n], None if y is None else y[:n])


def run_batches(vae: Any, backend: str, x: np.ndarray, c: np.ndarray | None,
                batch_size: int) -> list[Batch]:
    """``(args, kwargs)`` batches of points ``x`` (N, D) and conditioning ``c`` for a VAE's
    model and guide ``(vae, x, c)`` in ``backend``."""
    return batches((x, c), batch_size, backend=backend, static=(vae,))


def model_arrays(backend: str, *arrays: Any) -> tuple[Any, ...]:
    """Arrays as the ``backend``'s float32 arrays (None stays None), for a run's model."""
    return tuple(as_array(a, backend) for a in arrays)
