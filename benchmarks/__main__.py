"""``python -m benchmarks NAME [--quick] [--json PATH]``: run ratio benchmarks.

Each benchmark is a module ``benchmarks/<name>.py`` exposing
``run(quick: bool) -> dict[str, float]``: flat metrics, where ratios compare our code with a
hand-written torch / JAX / numpy loop measured interleaved in the same process.
``all`` runs every registered benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

#: Registered benchmarks, in the order ``all`` runs them.
BENCHMARKS: tuple[str, ...] = ("datasets", "mcmc", "ising", "vae", "evidence", "scaling",
                               "objectives")


def _table(name: str, metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=4)
    lines = [f"== {name}", f"{'metric'.ljust(width)}  value"]
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmark(s), print a table each and optionally write JSON."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # torch and JAX share the process: idle OpenMP workers must not spin on the cores
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=(*BENCHMARKS, "all"), help="benchmark to run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--json", metavar="PATH", help="write the results here as JSON")
    args = parser.parse_args(argv)
    names = BENCHMARKS if args.name == "all" else (args.name,)
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        metrics = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        metrics["wall_seconds"] = time.perf_counter() - t0
        results[name] = metrics
        print(_table(name, metrics), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": platform.machine(), "cpus": os.cpu_count(),
                   "python": platform.python_version(), "quick": args.quick,
                   "results": results}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
