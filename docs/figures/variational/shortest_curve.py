"""The shortest curve between two points by gradient descent on the discrete arc length.

Run from the repository root: ``python docs/figures/variational/shortest_curve.py``. Writes
``shortest_curve.png`` and ``shortest_curve.json`` beside this file (seconds on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

from varbayes.inference.shortest_curve import Curve, length, run, wiggly

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
CURVE = Curve(x0=0.0, x1=1.0, y0=0.0, y1=1.0, n=31)
STEPS, EVERY = 12_000, 100
SHOWN = (0, 100, 300, 1000, 3000, 12_000)


def main() -> None:
    start = wiggly(CURVE)
    _, lengths, ys = run(start, CURVE, steps=STEPS, every=EVERY)
    ys = np.vstack([np.asarray(start)[None], np.asarray(ys)])  # heights after k·EVERY steps
    x, line = CURVE.grid(), CURVE.line()
    deviation = np.abs(ys - line).max(1)
    lengths = np.concatenate([[float(length(start, CURVE))], np.asarray(lengths, np.float64)])

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(SHOWN)))
    for k, c in zip(SHOWN, colors, strict=True):
        y = np.concatenate([[CURVE.y0], ys[k // EVERY], [CURVE.y1]])
        a.plot(x, y, ".-", color=c, ms=3, label=f"step {k}")
    a.plot(x, np.concatenate([[CURVE.y0], line, [CURVE.y1]]), "k--", lw=1,
           label="Euler–Lagrange: y″ = 0")
    a.set(xlabel="x", ylabel="y(x)", title="iterates of gradient descent on L[y]")
    a.legend(fontsize=8)
    steps = np.arange(len(lengths))
    b.semilogy(steps, lengths - CURVE.distance(), label="L(y) − |end − start|")
    b.semilogy(np.arange(len(deviation)) * EVERY, deviation, label="max |y − line|")
    b.axhline(1e-4, color="grey", ls=":", lw=1)
    b.set(xlabel="gradient step (size h/4)", title="convergence to the straight line")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "shortest_curve.png", dpi=110)
    out = {"n": CURVE.n, "steps": STEPS, "lr": CURVE.h / 4,
           "start_length": float(lengths[0]), "final_length": float(lengths[-1]),
           "distance": CURVE.distance(), "final_max_deviation": float(deviation[-1]),
           "first_step_below_1e-4": int(np.argmax(deviation <= 1e-4) * EVERY)}
    (HERE / "shortest_curve.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
