"""``varbayes.models``: one package per model; its math and its ground truth live in one place.

Rules of this room (checked by ``tests/test_layout.py``):

- ``varbayes.models`` never imports ``varbayes.inference``; its one error type is
  :class:`varbayes.models.errors.VarbayesError`, which inference raises too.
- Each model package writes its Pyro and NumPyro model+guide side by side in
  ``pyro_model.py`` and ``numpyro_model.py``, with the same names, signatures and sample
  sites in the same order; backend-free math (configurations, energies, exact answers)
  sits beside them and imports neither torch nor JAX at module level.
- This ``__init__`` imports nothing.
"""
