"""The one exception type that the CLI turns into a single clear line.

Raise :class:`VarbayesError` at an API or CLI boundary when the *input* is wrong. The
message names the offending value and the fix, e.g.
``"--sigma must be > 0, got -1.0: pass a positive noise standard deviation"``.
"""

from __future__ import annotations


class VarbayesError(ValueError):
    """Bad input or a missing resource, explained in one line for the user."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`VarbayesError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise VarbayesError(message)
