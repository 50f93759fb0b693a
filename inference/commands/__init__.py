"""One module per ``varbayes`` command group; each exposes ``register(subparsers)``."""
