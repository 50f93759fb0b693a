"""``varbayes.inference``: algorithms, model-family workflows and the CLI.

Rules of this room (written in ``docs/architecture.md`` and checked by
``tests/test_layout.py``):

- The generic families (``vi``, ``mcmc``, ``evidence``, ``workflow``, ``data``) and the
  shared modules (``backends``, ``io``) work for any model+guide pair. They never import
  ``inference.ising``, ``inference.vae``, ``commands`` or ``cli``, nor any model package
  (``backends.model_module`` looks a model module up by name for the model families).
- The model families ``inference.ising`` and ``inference.vae`` may use the generic families
  and their own models; they never import each other, ``commands`` or ``cli``.
- Nothing but ``cli.py`` and the tests imports ``commands``. A command parses its arguments,
  calls the library, writes its outputs and prints a summary.
- Every generic algorithm that takes a model takes ``backend=`` (``"numpyro"`` or
  ``"pyro"``) and dispatches once, at its entry; functions for one backend only carry its
  name (``numpyro_log_joint``), and :mod:`varbayes.inference.backends` converts arrays.
- Package ``__init__`` modules import nothing; the public API is :mod:`varbayes`.
"""
