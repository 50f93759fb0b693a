"""The calculus of variations' first example, numerically: the shortest curve between two
points, by gradient descent on the discretized arc-length functional (JAX).

The curve y(x) on [x₀, x₁] with fixed ends y(x₀) = y₀, y(x₁) = y₁ has length
L[y] = ∫ √(1 + y′²) dx. Its Euler–Lagrange equation, d/dx (y′/√(1 + y′²)) = 0, makes y′
constant: y″ = 0, the straight line, whose length is the Euclidean distance between the
ends. On a grid of n interior points the functional becomes a function of n heights,

    L(y) = Σ_{i=0}^{n} √(h² + (y_{i+1} − y_i)²),   h = (x₁ − x₀)/(n + 1),

whose gradient descent (a pure ``step`` on a :class:`CurveState`, ``run`` with ``lax.scan``)
must end on the straight line. Its step is h/4: each term's curvature in a height is at most
1/h and each height sits in two terms, so the Hessian is below 4/h and the length falls at
every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import check


class Curve(NamedTuple):
    """The fixed ends and the grid: x₀ < x₁, the end heights and n interior points."""

    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0
    n: int = 31

    @property
    def h(self) -> float:
        """Grid spacing (x₁ − x₀)/(n + 1)."""
        return (self.x1 - self.x0) / (self.n + 1)

    def grid(self) -> np.ndarray:
        """The n + 2 abscissae, ends included, (n + 2,)."""
        return np.linspace(self.x0, self.x1, self.n + 2)

    def line(self) -> np.ndarray:
        """The straight line's interior heights, (n,): the Euler–Lagrange solution."""
        t = (self.grid()[1:-1] - self.x0) / (self.x1 - self.x0)
        return self.y0 + t * (self.y1 - self.y0)

    def distance(self) -> float:
        """The Euclidean distance between the ends: the shortest length."""
        return float(np.hypot(self.x1 - self.x0, self.y1 - self.y0))


class CurveState(NamedTuple):
    """Gradient-descent state: the interior heights y (n,) and their length."""

    y: Any
    length: Any


def check_curve(curve: Curve) -> Curve:
    """One-line refusals for a curve without a grid or with a reversed interval."""
    check(curve.n >= 1, f"the curve needs n >= 1 interior points, got {curve.n}")
    check(np.isfinite([curve.x0, curve.x1, curve.y0, curve.y1]).all() and curve.x1 > curve.x0,
          f"the curve needs finite ends with x1 > x0, got x0={curve.x0}, x1={curve.x1}")
    return curve


def length(y: Any, curve: Curve) -> Any:
    """The discrete arc length L(y) of the interior heights y (n,), ends attached."""
    import jax.numpy as jnp

    full = jnp.concatenate([jnp.array([curve.y0], y.dtype), y, jnp.array([curve.y1], y.dtype)])
    return jnp.sum(jnp.sqrt(curve.h ** 2 + jnp.diff(full) ** 2))


def wiggly(curve: Curve, amplitude: float = 0.3, waves: tuple[int, ...] = (1, 3, 7)) -> Any:
    """A start far from the line: the line plus sine waves that vanish at the ends, (n,)."""
    import jax.numpy as jnp

    t = (curve.grid()[1:-1] - curve.x0) / (curve.x1 - curve.x0)
    bump = sum(np.sin(np.pi * k * t) / k for k in waves)
    return jnp.asarray(curve.line() + amplitude * bump, jnp.float32)


def init(y: Any, curve: Curve) -> CurveState:
    """The state at heights y (n,)."""
    return CurveState(y, length(y, curve))


def step(state: CurveState, curve: Curve, lr: float) -> CurveState:
    """One gradient step y ← y − lr ∇L(y)."""
    import jax

    y = state.y - lr * jax.grad(length)(state.y, curve)
    return CurveState(y, length(y, curve))


def run(y: Any, curve: Curve, steps: int, lr: float | None = None, every: int = 1
        ) -> tuple[CurveState, Any, Any]:
    """``steps`` gradient steps from heights y (default step h/4). Returns the final state,
    the length after each step (steps,), and the heights every ``every`` steps
    (steps // every, n)."""
    import jax

    check_curve(curve)
    check(steps >= 1 and every >= 1 and steps % every == 0,
          f"steps must be a positive multiple of every, got steps={steps}, every={every}")
    lr = curve.h / 4 if lr is None else lr

    def inner(state: CurveState, _: Any) -> tuple[CurveState, Any]:
        state = step(state, curve, lr)
        return state, state.length

    def outer(state: CurveState, _: Any) -> tuple[CurveState, Any]:
        state, lengths = jax.lax.scan(inner, state, None, length=every)
        return state, (lengths, state.y)

    final, (lengths, ys) = jax.jit(lambda s: jax.lax.scan(outer, s, None,
                                                          length=steps // every))(init(y, curve))
    return final, lengths.reshape(-1), ys
