"""One module per ``varbayes`` command group; each exposes ``register(subparsers)``.

Thin: a command parses its arguments, calls the library, writes its outputs and prints a
summary. Nothing but :mod:`varbayes.inference.cli` and the tests imports these modules;
the options several commands share live in :mod:`._options`."""
