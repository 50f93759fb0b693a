"""``varbayes ising denoise | compare | gap``: Ising-model image denoising.

- ``denoise``: one method on one image; writes ``metrics.json``, ``posterior.npz``
  (``mean``, ``observed``), ``panel.png`` and ``history.png``.
- ``compare``: every method on one image; writes ``compare.md``, ``metrics.json`` and
  ``compare.png``.
- ``gap``: exact ``log Z`` against the best mean-field ELBO over a range of couplings on a
  small grid; writes ``gap.csv``, ``metrics.json`` and ``gap.png``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from varbayes.inference.backends import BACKENDS
from varbayes.inference.commands._limits import (
    INT32_MAX,
    check_counter,
    check_fits,
    check_sum_fits,
)
from varbayes.inference.commands._options import add_common, add_data_dir
from varbayes.inference.data import datasets
from varbayes.inference.data.files import READ_ERRORS, one_line
from varbayes.inference.io import atomic_write_bytes, out_dir, progress, save_figure, write_metrics
from varbayes.inference.ising.cavi import SCHEDULES, validate_schedule
from varbayes.inference.ising.denoise import (
    COMPARE_RUNS,
    DEFAULT_ITERS,
    METHODS,
    SCORE_MAX_SITES,
    Options,
    compare_methods,
    run_method,
)
from varbayes.inference.ising.gap import MEAN_FIELD_JC, ONSAGER_JC, gap_curves
from varbayes.inference.ising.results import PosteriorResult
from varbayes.models.errors import VarbayesError, check
from varbayes.models.ising import exact, plots
from varbayes.models.ising.noise import (
    NOISE_KINDS,
    Noise,
    corrupt,
    make_posterior,
    pixel_error,
    threshold,
    validate_clean,
    validate_noise,
    validate_observed,
)


class Problem(NamedTuple):
    """A denoising task read from the command line."""

    name: str
    clean: np.ndarray | None
    """(H, W) int8 ±1, or None when only ``--observed`` was given."""
    observed: np.ndarray
    """(H, W) float64."""
    noise: Noise
    J: float | tuple[np.ndarray, np.ndarray]


def _real(a: np.ndarray) -> bool:
    """True for an array of real numbers (bool, integer or float)."""
    return a.dtype.kind in "biuf"


def _coupling(text: str, shape: tuple[int, int]) -> float | tuple[np.ndarray, np.ndarray]:
    """``--coupling``: a number, or an .npz file with ``horizontal`` and ``vertical`` arrays."""
    try:
        return float(text)
    except ValueError:
        pass
    path = Path(text)
    check(path.is_file(), f"--coupling {text!r} is neither a number nor an existing .npz file")
    need = (f"need an .npz with arrays 'horizontal' {(shape[0], shape[1] - 1)} and 'vertical' "
            f"{(shape[0] - 1, shape[1])}")
    try:
        f = np.load(path, allow_pickle=False)
    except READ_ERRORS as e:
        raise VarbayesError(f"--coupling {path} is not a readable .npz file ({one_line(e)}): "
                            f"{need}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise VarbayesError(f"--coupling {path} holds one array, not an .npz archive: {need}")
    try:
        with f:
            hor, ver = np.asarray(f["horizontal"]), np.asarray(f["vertical"])
    except READ_ERRORS as e:
        raise VarbayesError(f"--coupling {path}: {need} ({one_line(e)})") from None
    check(hor.shape == (shape[0], shape[1] - 1) and ver.shape == (shape[0] - 1, shape[1]),
          f"--coupling {path} holds arrays of shapes {hor.shape} and {ver.shape}: {need}")
    check(_real(hor) and _real(ver) and bool(np.isfinite(hor).all() & np.isfinite(ver).all()),
          f"--coupling {path} holds {hor.dtype}/{ver.dtype} arrays that are not all finite "
          f"real numbers: {need}")
    return hor, ver


def _npy_claim(path: Path) -> tuple[tuple[int, ...], int, int] | None:
    """(shape, bytes claimed, bytes held) from an .npy header, None for another format; read
    before numpy allocates what a corrupt header may claim (terabytes)."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
            return None
        f.seek(0)
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, math.prod(shape) * dtype.itemsize, path.stat().st_size - f.tell()


def _load_npy(path: Path, option: str) -> np.ndarray:
    check(path.is_file(), f"{option} {path} does not exist: pass a .npy file")
    try:
        claim = _npy_claim(path)
        fits = claim is None or claim[1] <= claim[2]
        a = np.load(path, allow_pickle=False) if fits else None
    except READ_ERRORS as e:
        raise VarbayesError(f"{option} {path} is not a readable .npy array ({one_line(e)})"
                            ) from None
    if a is None:
        raise VarbayesError(f"{option} {path} is truncated or corrupt: its header claims shape "
                            f"{claim[0]} ({claim[1]} bytes) but {claim[2]} bytes follow")
    if not isinstance(a, np.ndarray):
        a.close()
        raise VarbayesError(f"{option} {path} is an .npz archive: pass one 2-D .npy array")
    check(a.ndim == 2 and a.size > 0,
          f"{option} {path} holds an array of shape {a.shape}: pass a non-empty 2-D image")
    check(_real(a), f"{option} {path} holds {a.dtype} values: pass an array of real numbers")
    return a


def _load_image_npy(path: Path, option: str,
                    validate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``_load_npy`` then ``validate`` (the values' check); its refusal names the file."""
    a = _load_npy(path, option)
    try:
        return validate(a)
    except VarbayesError as e:
        raise VarbayesError(f"{option} {path}: {e}") from None


def load_problem(args: argparse.Namespace) -> Problem:
    """Read the clean image and/or the observation, and add noise when needed."""
    check(args.image is not None or args.observed is not None,
          "give --image NAME|PATH (letterA, shapes, digits:N, .png/.pgm) or --observed FILE.npy")
    noise = validate_noise(Noise(args.noise, args.sigma if args.noise == "gaussian"
                                 else args.flip_prob))
    clean = None
    if args.image is not None and args.image.endswith(".npy"):
        clean = _load_image_npy(Path(args.image), "--image", validate_clean)
    elif args.image is not None:
        clean = validate_clean(datasets.load_binary_image(args.image, args.data_dir))
    if args.observed is not None:
        path = Path(args.observed)
        observed = _load_image_npy(path, "--observed", lambda a: validate_observed(a, noise))
        if clean is not None:
            check(observed.shape == clean.shape,
                  f"--observed has shape {observed.shape} but --image {args.image} has shape "
                  f"{clean.shape}: pass arrays of the same size")
        name = path.stem
    else:
        observed = corrupt(clean, noise, np.random.default_rng(args.seed))
        name = args.image
    J = _coupling(args.coupling, observed.shape)
    make_posterior(observed, noise, J)  # validates the couplings against the grid now
    return Problem(str(name), clean, observed, noise, J)


#: Bytes held per Gibbs sweep or SVI step: its PRNG key, the log-joint or ELBO trace (float32,
#: then float64) and the history plot's line (about 70 measured).
HISTORY_BYTES_PER_STEP = 64
#: Bytes per site of each Gibbs chain or score-function particle: its spins, uniforms, local
#: field and running mean or score, float32.
BYTES_PER_SITE = 16
#: Bytes per coupling of ``ising gap``: the gaps and relative errors, a gap.csv row and the
#: curves' points.
GAP_BYTES_PER_POINT = 256


def check_counts(methods: list[str], opts: Options, shape: tuple[int, int]) -> None:
    """Refuse counts that ``methods`` cannot count or hold on a grid of ``shape``, before any
    work: Gibbs and NumPyro SVI loop with 32-bit counters and keep a value per sweep or step;
    Gibbs chains and score-function particles each hold a few arrays of the grid's size.
    (CAVI and ICM stop at convergence: their --iters is only a cap.)"""
    grid = f"on a {shape[0]}x{shape[1]} grid"
    for m in methods:
        iters = DEFAULT_ITERS[m] if opts.iters is None else opts.iters
        check(iters >= 1, f"--iters must be >= 1, got {iters}")
        if m == "gibbs":
            check(opts.chains >= 1, f"--chains must be >= 1, got {opts.chains}")
            check(opts.burn_in >= 0, f"--burn-in must be >= 0, got {opts.burn_in}")
            sweeps = {"--iters": iters, "--burn-in": opts.burn_in}
            check_sum_fits(sweeps, HISTORY_BYTES_PER_STEP, "the per-sweep trace and its plot",
                           cap=INT32_MAX)
            check_counter(sweeps, "the Gibbs sampler's 32-bit sweep counter")
            check_fits("--chains", opts.chains, BYTES_PER_SITE * shape[0] * shape[1],
                       "the chains' spins and running means", given=grid)
        elif m in ("svi", "svi-score"):
            check_fits("--iters", iters, HISTORY_BYTES_PER_STEP, "the per-step ELBO trace and "
                       "its plot", cap=INT32_MAX if opts.backend == "numpyro" else None)
            if opts.backend == "numpyro":
                check_counter({"--iters": iters}, "NumPyro SVI's 32-bit step counter")
            if m == "svi-score":
                check(opts.particles >= 1, f"--particles must be >= 1, got {opts.particles}")
                check_fits("--particles", opts.particles, BYTES_PER_SITE * shape[0] * shape[1],
                           "the particles' spins and score terms", given=grid)


def _options(args: argparse.Namespace) -> Options:
    validate_schedule(args.schedule, args.damping)
    return Options(schedule=args.schedule, damping=args.damping, iters=args.iters,
                   tol=args.tol, backend=args.backend, lr=args.lr, particles=args.particles,
                   chains=args.chains, burn_in=args.burn_in, seed=args.seed)


def _describe(p: Problem) -> str:
    scale = f"sigma={p.noise.scale:g}" if p.noise.kind == "gaussian" else \
        f"p={p.noise.scale:g}"
    J = f"J={p.J:g}" if isinstance(p.J, float) else "per-edge J"
    return f"{p.name} {p.observed.shape[0]}x{p.observed.shape[1]}, {p.noise.kind} {scale}, {J}"


def _error(p: Problem, estimate: np.ndarray) -> float | None:
    return None if p.clean is None else pixel_error(estimate, p.clean)


def _denoise(args: argparse.Namespace) -> int:
    p = load_problem(args)
    opts = _options(args)
    check_counts([args.method], opts, p.observed.shape)
    if args.method == "exact":  # refuse large grids before anything else is written
        H, W = p.observed.shape
        check(min(H, W) <= exact.MAX_ROWS,
              f"a {H}x{W} grid is too large for --method exact: the transfer matrix needs "
              f"min(height, width) <= {exact.MAX_ROWS}; crop the image or pick another method")
    out = out_dir(args.out)
    res = run_method(args.method, p.observed, p.noise, p.J, opts)
    err = _error(p, res.estimate)
    metrics = {
        "pixel_error": err, "threshold_pixel_error": _error(p, threshold(p.observed)),
        "elbo": res.elbo, "log_evidence": res.log_evidence, "iterations": res.iterations,
        "seconds": res.seconds, "method": args.method, "height": p.observed.shape[0],
        "width": p.observed.shape[1], "noise": p.noise.kind, "noise_scale": p.noise.scale,
        "coupling": p.J if isinstance(p.J, float) else None,
    }
    if args.method in ("cavi",):
        metrics.update(schedule=opts.schedule, damping=opts.damping)
    if args.method in ("svi", "svi-score"):
        metrics.update(backend=opts.backend)
    if res.mean_stderr is not None:
        metrics["mean_stderr_max"] = float(np.nanmax(res.mean_stderr))
    if args.method == "exact":
        log_zw = exact.log_prior_partition(make_posterior(p.observed, p.noise, p.J).couplings)
        metrics.update(log_prior_partition=log_zw, log_p_x=res.log_evidence - log_zw)
    _write_posterior(out, p, res)
    title = f"{args.method} on {_describe(p)}"
    save_figure(plots.panel(p.clean, p.observed, res.mean, res.estimate, title),
                out / "panel.png")
    save_figure(plots.history(res.history, res.history_label, title), out / "history.png")
    write_metrics(out, metrics)
    shown = "n/a (no clean image)" if err is None else f"{100 * err:.2f}%"
    extra = (f", ELBO {res.elbo:.2f} nats" if math.isfinite(res.elbo) else "") + (
        f", log evidence {res.log_evidence:.2f} nats" if math.isfinite(res.log_evidence) else "")
    print(f"ising denoise: {title}: pixel error {shown}{extra}, {res.iterations} iterations, "
          f"{res.seconds:.3g} s -> {out}")
    return 0


def _write_posterior(out: Path, p: Problem, res: PosteriorResult) -> None:
    import io

    arrays = {"mean": res.mean, "observed": p.observed, "estimate": res.estimate}
    if p.clean is not None:
        arrays["clean"] = p.clean
    if res.mean_stderr is not None:
        arrays["mean_stderr"] = res.mean_stderr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "posterior.npz", buf.getvalue())


def _compare(args: argparse.Namespace) -> int:
    p = load_problem(args)
    base = _options(args)
    H, W = p.observed.shape
    check_counts([m for _, m, over in COMPARE_RUNS if "iters" not in over
                  and not (m == "svi-score" and H * W > SCORE_MAX_SITES)], base, (H, W))
    out = out_dir(args.out)
    results = compare_methods(p.observed, p.noise, p.J, base,
                              progress=lambda r: progress(r, desc="ising compare"))
    rows = [("threshold", _error(p, threshold(p.observed)), math.nan, math.nan, 0, 0.0)]
    rows += [(label, _error(p, res.estimate), res.elbo, res.log_evidence, res.iterations,
              res.seconds) for label, res in results.items()]
    estimates = {"threshold": threshold(p.observed)}
    estimates.update({label: res.estimate for label, res in results.items()})
    metrics: dict[str, object] = {"height": H, "width": W, "noise": p.noise.kind,
                                  "noise_scale": p.noise.scale}
    for label, err, elbo, logz, its, secs in rows:
        key = label.replace("-", "_")
        metrics.update({f"{key}_pixel_error": err, f"{key}_elbo": elbo,
                        f"{key}_log_evidence": logz, f"{key}_iterations": its,
                        f"{key}_seconds": secs})
    table = _table(rows, _describe(p))
    atomic_write_bytes(out / "compare.md", table.encode())
    errors = {r[0]: (math.nan if r[1] is None else r[1]) for r in rows}
    save_figure(plots.comparison(p.clean, p.observed, estimates, errors), out / "compare.png")
    write_metrics(out, metrics)
    print(table, end="")
    print(f"-> {out}")
    return 0


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _table(rows, description: str) -> str:
    lines = [f"ising compare: {description}", "",
             "| method | pixel error | ELBO (nats) | log evidence (nats) | iterations | seconds |",
             "|---|---|---|---|---|---|"]
    for label, err, elbo, logz, its, secs in rows:
        e = "–" if err is None else f"{100 * err:.2f}%"
        lines.append(f"| {label} | {e} | {_fmt(elbo, '.2f')} | {_fmt(logz, '.2f')} | {its} | "
                     f"{secs:.3g} |")
    return "\n".join(lines) + "\n"


def _gap(args: argparse.Namespace) -> int:
    check(1 <= args.size <= exact.MAX_ROWS,
          f"--size must be in [1, {exact.MAX_ROWS}] (the exact limit), got {args.size}")
    check(math.isfinite(args.j_max) and args.j_max > 0,
          f"--j-max must be a finite number > 0, got {args.j_max}")
    check(args.points >= 2, f"--points must be >= 2, got {args.points}")
    check_fits("--points", args.points, GAP_BYTES_PER_POINT, "the gaps, gap.csv and the curves")
    check(args.repeats >= 1, f"--repeats must be >= 1 (noisy images averaged per J), got "
                             f"{args.repeats}")
    noise = validate_noise(Noise("gaussian", args.sigma))
    out = out_dir(args.out)
    Js = np.linspace(args.j_max / args.points, args.j_max, args.points)
    n = args.size**2
    c = gap_curves(Js, args.size, noise, args.repeats, np.random.default_rng(args.seed),
                   progress=lambda r: progress(r, desc="ising gap"))
    zero_gap, zero_rel, data_gaps, data_rel = c
    lines = ["J,gap_zero_field_nats,relerr_zero_field,gap_data_nats,relerr_data"]
    lines += [f"{J:.4f},{a:.6f},{b:.6f},{c:.6f},{d:.6f}"
              for J, a, b, c, d in zip(Js, zero_gap, zero_rel, data_gaps, data_rel, strict=True)]
    atomic_write_bytes(out / "gap.csv", ("\n".join(lines) + "\n").encode())
    curves = {"zero field": zero_gap / n, f"sigma={args.sigma:g} data": data_gaps / n}
    marks = {"mean-field Jc=0.25": MEAN_FIELD_JC, "Onsager Jc=0.441": ONSAGER_JC}
    fig = plots.gap_curve(Js, curves, "log Z − best ELBO (nats per site)", marks)
    fig.axes[0].set_title(f"{args.size}x{args.size} grid, exact log Z by transfer matrix",
                          fontsize=9)
    save_figure(fig, out / "gap.png")
    metrics = {"size": args.size, "sigma": args.sigma,
               "peak_coupling_zero_field": float(Js[np.argmax(zero_gap)]),
               "peak_coupling_data": float(Js[np.argmax(data_gaps)]),
               "max_relerr_zero_field": float(zero_rel.max()),
               "max_relerr_data": float(data_rel.max()),
               "min_gap_nats": float(min(zero_gap.min(), data_gaps.min()))}
    write_metrics(out, metrics)
    print(f"ising gap: {args.size}x{args.size}, {len(Js)} couplings up to {args.j_max:g}: "
          f"zero-field gap peaks at J={metrics['peak_coupling_zero_field']:.3f} "
          f"(relative error {100 * metrics['max_relerr_zero_field']:.1f}%), "
          f"sigma={args.sigma:g} data at J={metrics['peak_coupling_data']:.3f} -> {out}")
    return 0


def _add_input(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--image", metavar="NAME|PATH",
                   help="clean image: letterA, shapes, digits:N, a .png/.pgm path (binarized at "
                        "its mean) or a .npy array of ±1")
    g.add_argument("--observed", metavar="FILE.npy",
                   help="a noisy observation given directly (real for gaussian, ±1 for flip); "
                        "with --image, that image is the clean reference")
    g.add_argument("--noise", choices=NOISE_KINDS, default="gaussian",
                   help="noise model (default gaussian)")
    g.add_argument("--sigma", type=float, default=2.0,
                   help="gaussian noise standard deviation (default 2)")
    g.add_argument("--flip-prob", type=float, default=0.1,
                   help="flip noise: chance that a pixel flips, in (0, 0.5) (default 0.1)")
    g.add_argument("--coupling", default="1.0", metavar="J|FILE.npz",
                   help="coupling J on every edge, or an .npz with per-edge 'horizontal' "
                        "(H, W-1) and 'vertical' (H-1, W) arrays (default 1)")
    m = p.add_argument_group("inference")
    m.add_argument("--schedule", choices=SCHEDULES, default="checkerboard",
                   help="CAVI schedule (default checkerboard)")
    m.add_argument("--damping", type=float, default=1.0,
                   help="CAVI damping λ in (0, 1] (default 1: no damping)")
    m.add_argument("--iters", type=int, default=None,
                   help="max sweeps (cavi, icm), optimizer steps (svi), kept sweeps (gibbs)")
    m.add_argument("--tol", type=float, default=1e-6,
                   help="CAVI stops when max |Δμ| < tol (default 1e-6)")
    m.add_argument("--backend", choices=BACKENDS, default="numpyro",
                   help="SVI backend (default numpyro)")
    m.add_argument("--lr", type=float, default=0.05, help="SVI Adam step size (default 0.05)")
    m.add_argument("--particles", type=int, default=16,
                   help="svi-score Monte-Carlo particles (default 16)")
    m.add_argument("--chains", type=int, default=4, help="Gibbs chains (default 4)")
    m.add_argument("--burn-in", type=int, default=50,
                   help="Gibbs sweeps discarded (default 50)")
    add_common(p)
    add_data_dir(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``varbayes ising denoise``, ``ising compare`` and ``ising gap``."""
    p = sub.add_parser("ising", help="Ising-model image denoising (mean field, SVI, Gibbs, "
                                     "exact)",
                       description="Binary image denoising with an Ising prior.")
    s = p.add_subparsers(dest="ising_command", metavar="COMMAND", required=True,
                         parser_class=type(p))
    d = s.add_parser("denoise", help="one method on one image",
                     description="Denoise one image; writes metrics.json, posterior.npz "
                                 "(mean, observed), panel.png and history.png into --out.")
    d.add_argument("--method", choices=METHODS, default="cavi", help="default cavi")
    _add_input(d)
    d.set_defaults(func=_denoise)
    c = s.add_parser("compare", help="every method on one image: table and figure",
                     description="Runs threshold, ICM, CAVI (parallel and checkerboard), SVI, "
                                 "Gibbs, and score-function SVI and exact inference where the "
                                 "grid is small enough; writes compare.md, metrics.json and "
                                 "compare.png.")
    _add_input(c)
    c.set_defaults(func=_compare)
    g = s.add_parser("gap", help="mean-field ELBO against exact log Z over couplings",
                     description="On an NxN grid, the exact log Z (transfer matrix) minus the "
                                 "best mean-field ELBO, for zero field and for noisy data; "
                                 "writes gap.csv, metrics.json and gap.png.")
    g.add_argument("--size", type=int, default=8, help="grid side N (default 8)")
    g.add_argument("--j-max", type=float, default=1.0, help="largest coupling (default 1)")
    g.add_argument("--points", type=int, default=40, help="couplings (default 40)")
    g.add_argument("--sigma", type=float, default=2.0,
                   help="noise of the data curve (default 2)")
    g.add_argument("--repeats", type=int, default=5,
                   help="noisy images averaged for the data curve (default 5)")
    add_common(g)
    g.set_defaults(func=_gap)
