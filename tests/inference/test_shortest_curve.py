"""The calculus-of-variations example (inference/shortest_curve.py): gradient descent on
the discrete arc length ends on the Euler–Lagrange solution, the straight line."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.shortest_curve import Curve, length, run, wiggly
from varbayes.models.errors import VarbayesError


@pytest.mark.parametrize("curve", [Curve(), Curve(x0=-1.0, x1=2.0, y0=0.5, y1=-1.5, n=24)])
def test_descent_ends_on_the_straight_line(curve):
    start = wiggly(curve)
    assert np.abs(np.asarray(start) - curve.line()).max() > 0.2
    final, lengths, ys = run(start, curve, steps=12_000, every=1_000)
    dev = np.abs(np.asarray(final.y) - curve.line()).max()
    assert dev <= 1e-4, dev
    # the length falls at every step (step h/4 is below 2/curvature) to the distance
    assert (np.diff(np.asarray(lengths)) <= 1e-6).all()
    assert float(lengths[-1]) == pytest.approx(curve.distance(), abs=1e-5)
    assert float(length(start, curve)) > curve.distance() + 0.1
    assert ys.shape == (12, curve.n)


@pytest.mark.slow
def test_the_line_is_a_stationary_point_and_the_minimum():
    import jax
    import jax.numpy as jnp

    curve = Curve(y1=2.0, n=9)
    line = jnp.asarray(curve.line(), jnp.float32)
    np.testing.assert_allclose(jax.grad(length)(line, curve), 0.0, atol=1e-6)
    assert float(length(line, curve)) == pytest.approx(curve.distance(), rel=1e-6)
    bumped = line.at[4].add(0.01)
    assert float(length(bumped, curve)) > float(length(line, curve))


def test_refusals():
    with pytest.raises(VarbayesError, match="n >= 1"):
        run(wiggly(Curve(n=3)), Curve(n=0), steps=10)
    with pytest.raises(VarbayesError, match="x1 > x0"):
        run(wiggly(Curve()), Curve(x0=1.0, x1=0.0), steps=10)
    with pytest.raises(VarbayesError, match="multiple of every"):
        run(wiggly(Curve()), Curve(), steps=10, every=3)
