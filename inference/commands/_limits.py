"""Upper bounds on the commands' counts: what this machine's memory holds, and what the
32-bit integer counters of JAX and NumPyro can count.

Each command computes from the shapes how many bytes a count makes it hold, a lower bound
(the arrays it cannot do without), and refuses before any work a count that cannot fit, in
one line that names the option, its value, the memory needed and available, and the
largest value that fits. Normal values are far below these bounds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from varbayes.models.errors import VarbayesError

#: The largest count a 32-bit signed integer holds: JAX loops and NumPyro's step counter
#: are int32 (without ``jax_enable_x64``).
INT32_MAX = 2**31 - 1

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def available_memory() -> int | None:
    """Bytes of memory this process can still take: ``MemAvailable`` of /proc/meminfo (else
    the physical memory), and no more than a cgroup v2 limit leaves; None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, avail)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units with one decimal: ``2.9 TiB``, ``512 B``."""
    n = int(n)
    for i, unit in enumerate(_UNITS):
        if n < 1024 ** (i + 1) or unit == _UNITS[-1]:
            if i == 0:
                return f"{n} B"
            whole = n // 1024**i
            if whole < 10**15:
                return f"{n / 1024**i:.1f} {unit}"
            digits = str(whole)  # beyond what a float holds: mantissa and exponent by hand
            return f"{digits[0]}.{digits[1]}e{len(digits) - 1} {unit}"
    raise AssertionError("unreachable")


def round_down(n: int) -> int:
    """``n`` rounded down to two significant digits (exact below 100): 7312 -> 7300."""
    if n < 100:
        return n
    p = 10 ** (len(str(n)) - 2)
    return n // p * p


def check_fits(flag: str, value: int, bytes_each: float, what: str, *, fixed: float = 0,
               given: str = "", cap: int | None = None) -> None:
    """Refuse ``flag value`` when ``value`` × ``bytes_each`` (+ ``fixed``) bytes of ``what``
    exceed the memory available, naming the largest value that fits.

    ``given`` (e.g. ``"with --chains 4"``) says which other options the bytes depend on;
    ``cap`` bounds the largest value named (a counter's limit). Nothing is refused when the
    available memory is unknown.
    """
    avail = available_memory()
    need = value * math.ceil(bytes_each) + math.ceil(fixed)
    if avail is None or need <= avail:
        return
    largest = (avail - math.ceil(fixed)) // max(1, math.ceil(bytes_each))
    largest = largest if cap is None else min(largest, cap)
    where = f" ({given})" if given else ""
    fix = (f"pass {flag} at most {round_down(largest)}" if largest >= 1 else
           f"even {flag} 1 does not fit{': lower the other sizes' if given else ''}")
    raise VarbayesError(f"{flag} {value} needs {format_bytes(need)} for {what}{where}, more "
                        f"than the {format_bytes(avail)} of memory available: {fix}")


def _others(counts: Mapping[str, int]) -> tuple[str, dict[str, int], str]:
    """The largest count's flag, the other counts, and ``"with --a 1, --b 2"`` for them."""
    flag = max(counts, key=lambda f: counts[f])
    others = {f: v for f, v in counts.items() if f != flag}
    text = ", ".join(f"{f} {v}" for f, v in others.items())
    return flag, others, f"with {text}" if text else ""


def check_product_fits(counts: Mapping[str, int], bytes_each: float, what: str, *,
                       fixed: float = 0, caps: Mapping[str, int] | None = None) -> None:
    """:func:`check_fits` for bytes proportional to the product of several counts (flag ->
    value): the largest count is the one named, the others are held at their values;
    ``caps`` bound the largest value named per flag (a counter's limit)."""
    flag, others, given = _others(counts)
    check_fits(flag, counts[flag], bytes_each * math.prod(others.values()), what,
               fixed=fixed, given=given, cap=(caps or {}).get(flag))


def check_sum_fits(counts: Mapping[str, int], bytes_each: float, what: str, *,
                   cap: int | None = None) -> None:
    """:func:`check_fits` for bytes proportional to the sum of several counts (flag ->
    value), e.g. kept and burn-in sweeps: the largest count is the one named; ``cap``
    bounds the sum (a counter's limit)."""
    flag, others, given = _others(counts)
    rest = sum(others.values())
    check_fits(flag, counts[flag], bytes_each, what, fixed=bytes_each * rest, given=given,
               cap=None if cap is None else max(0, cap - rest))


def check_counter(counts: Mapping[str, int], what: str, limit: int = INT32_MAX) -> None:
    """Refuse counts (flag -> value) whose sum exceeds ``limit``, the most that ``what``
    counts (a 32-bit integer by default); the largest count is the one named."""
    total = sum(counts.values())
    if total <= limit:
        return
    flag, others, given = _others(counts)
    total = f"{' + '.join(counts)} must be at most {limit} ({given}); " if others else ""
    raise VarbayesError(f"{flag} {counts[flag]} is more than {what} can count: {total}pass "
                        f"{flag} at most {max(0, limit - sum(others.values()))}")


#: Bytes NUTS on p(z|x) holds per chain, draw, test image and pixel: the float32 posterior
#: predictive images and the pointwise log-likelihoods of q's draws (float32, then
#: float64); about 15 measured for ``mcmc``.
LATENT_BYTES_PER_PIXEL = 12


def check_nuts_steps(warmup: int, samples: int) -> None:
    """``--warmup`` + ``--samples`` within NumPyro's 32-bit step counter (an OverflowError in
    a jitted loop otherwise)."""
    check_counter({"--warmup": warmup, "--samples": samples}, "NUTS's 32-bit step counter")


def check_latent_draws_fit(chains: int, samples: int, n_images: int, x_dim: int, *,
                           warmup: int = 0, runs: int = 1) -> None:
    """The draws of NUTS on p(z|x) of ``n_images`` test images of ``x_dim`` pixels within
    memory, for ``runs`` runs whose posterior predictive images are held together."""
    check_product_fits({"--chains": chains, "--samples": samples, "--n-data": n_images},
                       (LATENT_BYTES_PER_PIXEL + 4 * (runs - 1)) * x_dim,
                       "the posterior predictive images and pointwise log-likelihoods"
                       + (f" of {runs} runs" if runs > 1 else ""),
                       caps={"--samples": max(0, INT32_MAX - warmup)})
