"""Issue 16, fuzzing: every file reader either loads its file or refuses it in one line.

Each reader gets a small valid file written here (no shared data needed): gzipped IDX
images and labels, a letterA-style CSV, an ``.amat``, a Frey ``.mat``, a compact ``.npz``,
PNG and PGM images, the ising ``--image``/``--observed`` ``.npy`` and ``--coupling``
``.npz``, an SVI checkpoint, an InferenceData netCDF file and ``metrics.json``. Hypothesis
feeds each reader random bytes, truncations and bit flips of that file. The property: the
reader returns, or raises :class:`VarbayesError` whose message is one line and names the
file; never another exception type, never a crash, never a hang (a read over a minute ends
the run with a traceback). The unchanged files still load, and the files that broke a
reader before are kept as regression cases.

100 examples per reader, deterministic (``derandomize``); ``VARBAYES_FAULTS_LONG=1`` (what
``make faults`` sets) runs 1,000. The netCDF cases are marked slow: each read starts a
child process (see :func:`varbayes.inference.io.load_inferencedata`).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gzip
import io
import os
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from varbayes.inference.commands.ising import load_problem
from varbayes.inference.data import datasets
from varbayes.inference.data import files as df
from varbayes.inference.io import (
    load_inferencedata,
    read_metrics,
    save_inferencedata,
    write_metrics,
)
from varbayes.inference.vi.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from varbayes.models.errors import VarbayesError

LONG = os.environ.get("VARBAYES_FAULTS_LONG") == "1"
FUZZ = settings(max_examples=1000 if LONG else 100, deadline=None, derandomize=True,
                database=None, print_blob=False, suppress_health_check=[HealthCheck.too_slow])
#: Seconds one read may take; a read still running then ends the test run (see no_hang).
HANG_S = 60
#: What load_inferencedata here gives its isolated HDF5 read before refusing the file.
NETCDF_TIMEOUT_S = 5

RNG = np.random.default_rng(16)
IDX_IMAGES = RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)
IDX_LABELS = RNG.integers(0, 10, 7, dtype=np.uint8)
LETTER = RNG.integers(29, 228, (6, 5), dtype=np.uint8)
AMAT = RNG.integers(0, 2, (4, 6), dtype=np.uint8)
FF = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 8), dtype=np.uint8)
CLEAN = np.where(RNG.random((6, 8)) < 0.5, 1, -1).astype(np.int8)
OBSERVED = RNG.normal(size=(6, 8))
HORIZONTAL, VERTICAL = RNG.normal(size=(6, 7)), RNG.normal(size=(5, 8))
WEIGHTS = RNG.normal(size=(2, 3))
MU = RNG.normal(size=(1, 5))
METRICS = {"test_elbo": -1.5, "epochs": 3, "history": [1.0, 0.5]}


# ---------------------------------------------------------------------------- valid files

def _idx(magic: int, a: np.ndarray) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in a.shape)
    return gzip.compress(head + a.tobytes(), mtime=0)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _mat() -> bytes:
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {"ff": FF})
    text = b"MATLAB 5.0 MAT-file, written by tests/faults".ljust(116)  # no creation time
    return text + buf.getvalue()[116:]


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(GRAY).save(buf, format="PNG")
    return buf.getvalue()


def _checkpoint(folder: Path) -> bytes:
    header = {"format": FORMAT, "backend": "numpyro", "epoch": 2, "history": {"loss": [2, 1]}}
    return save_checkpoint(folder / "seed.npz", {"w": WEIGHTS, "step": np.array(2)},
                           header).read_bytes()


def _netcdf(folder: Path) -> bytes:
    import arviz as az

    idata = az.from_dict(posterior={"mu": MU})
    idata.posterior.attrs["created_at"] = "2024-01-01T00:00:00"  # the same bytes every run
    return save_inferencedata(idata, folder / "seed.nc").read_bytes()


def _metrics(folder: Path) -> bytes:
    return write_metrics(folder, METRICS).read_bytes()


# -------------------------------------------------------------------------------- readers

def _ising(**args: Any) -> Any:
    """``load_problem`` as ``ising denoise`` calls it (gaussian noise, σ = 1)."""
    ns = {"image": None, "observed": None, "noise": "gaussian", "sigma": 1.0,
          "flip_prob": 0.1, "coupling": "1.0", "seed": 0, "data_dir": None, **args}
    return load_problem(argparse.Namespace(**ns))


def _coupling(path: Path) -> Any:
    observed = path.with_name("observed.npy")
    if not observed.exists():
        observed.write_bytes(_npy(OBSERVED))
    return _ising(observed=str(observed), coupling=str(path))


def _same(a: Any, b: Any) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


class Reader(NamedTuple):
    """A file reader: the file's name, a valid file, the read, and the check of a valid read."""

    file: str
    seed: Callable[[Path], bytes]
    read: Callable[[Path], Any]
    loaded: Callable[[Any], bool]


READERS: dict[str, Reader] = {
    "idx-images": Reader("train-images-idx3-ubyte.gz", lambda d: _idx(2051, IDX_IMAGES),
                         lambda p: df.parse_idx_gz(p, 2051), lambda r: _same(r, IDX_IMAGES)),
    "idx-labels": Reader("train-labels-idx1-ubyte.gz", lambda d: _idx(2049, IDX_LABELS),
                         lambda p: df.parse_idx_gz(p, 2049), lambda r: _same(r, IDX_LABELS)),
    "letterA-csv": Reader("letterA.csv",
                          lambda d: "\n".join(",".join(map(str, r)) for r in LETTER).encode(),
                          df.parse_letter_csv, lambda r: _same(r, LETTER)),
    "amat": Reader("binarized_mnist_test.amat",
                   lambda d: "".join(" ".join(map(str, r)) + "\n" for r in AMAT).encode(),
                   lambda p: df.parse_amat(p, 6), lambda r: _same(r, AMAT)),
    "frey-mat": Reader("frey_rawface.mat", lambda d: _mat(), df.parse_frey_mat,
                       lambda r: _same(r, FF)),
    "compact-npz": Reader("frey_rawface.npz", lambda d: _npz(ff=FF), df.load_npz,
                          lambda r: _same(r["ff"], FF)),
    "png": Reader("image.png", lambda d: _png(), lambda p: datasets.load_binary_image(str(p)),
                  lambda r: _same(r, np.where(GRAY > GRAY.mean(), 1, -1))),
    "pgm": Reader("image.pgm", lambda d: b"P5\n8 6\n255\n" + GRAY.tobytes(),
                  lambda p: datasets.load_binary_image(str(p)),
                  lambda r: _same(r, np.where(GRAY > GRAY.mean(), 1, -1))),
    "ising-image-npy": Reader("clean.npy", lambda d: _npy(CLEAN),
                              lambda p: _ising(image=str(p)), lambda r: _same(r.clean, CLEAN)),
    "ising-observed-npy": Reader("noisy.npy", lambda d: _npy(OBSERVED),
                                 lambda p: _ising(observed=str(p)),
                                 lambda r: _same(r.observed, OBSERVED)),
    "ising-coupling-npz": Reader("coupling.npz",
                                 lambda d: _npz(horizontal=HORIZONTAL, vertical=VERTICAL),
                                 _coupling, lambda r: _same(r.J[0], HORIZONTAL)
                                 and _same(r.J[1], VERTICAL)),
    "svi-checkpoint": Reader("checkpoint.npz", _checkpoint, load_checkpoint,
                             lambda r: _same(r[0]["w"], WEIGHTS) and r[1]["epoch"] == 2),
    "netcdf": Reader("posterior.nc", _netcdf,
                     lambda p: load_inferencedata(p, timeout=NETCDF_TIMEOUT_S),
                     lambda r: _same(r.posterior["mu"].values, MU)),
    "metrics-json": Reader("metrics.json", _metrics, lambda p: read_metrics(p.parent),
                           lambda r: r == METRICS),
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The valid file of every reader, as bytes (the same bytes on every run)."""
    folder = tmp_path_factory.mktemp("seeds")
    return {name: r.seed(folder) for name, r in READERS.items()}


# ------------------------------------------------------------------------------ mutations

def _flip(data: bytes, bits: list[int]) -> bytes:
    out = bytearray(data)
    for b in bits:
        out[b // 8] ^= 1 << (b % 8)
    return bytes(out)


def mutants(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, a strict prefix of ``valid``, or ``valid`` with 1-8 bits flipped."""
    bits = st.lists(st.integers(0, 8 * len(valid) - 1), min_size=1, max_size=8)
    return st.one_of(st.binary(max_size=2 * len(valid)),
                     st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
                     bits.map(lambda b: _flip(valid, b)))


@contextlib.contextmanager
def no_hang(seconds: int = HANG_S) -> Iterator[None]:
    """End the whole test run, with every thread's traceback, if the block takes longer
    than ``seconds``: a hang in C code (HDF5, zlib) cannot be interrupted otherwise."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def read_or_refuse(reader: Reader, path: Path) -> VarbayesError | None:
    """Read ``path``; a refusal must be a one-line VarbayesError naming the file."""
    try:
        with no_hang():
            reader.read(path)
    except VarbayesError as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message, message
        assert path.name in message, message
        return e
    return None


# ------------------------------------------------------------------- the property, fuzzed

@pytest.mark.slow
@pytest.mark.parametrize("name", list(READERS))
def test_valid_files_load(name: str, seeds: dict[str, bytes], tmp_path: Path) -> None:
    reader = READERS[name]
    path = tmp_path / reader.file
    path.write_bytes(seeds[name])
    with no_hang():
        assert reader.loaded(reader.read(path))


@pytest.mark.parametrize("name", [  # each netCDF read starts a child process (0.2 s)
    pytest.param(n, marks=pytest.mark.slow) if n == "netcdf" else n for n in READERS])
def test_fuzzed_files_load_or_are_refused_in_one_line(name: str, seeds: dict[str, bytes],
                                                      tmp_path: Path,
                                                      fault_log: Callable[..., None]) -> None:
    reader = READERS[name]
    path = tmp_path / reader.file
    loaded: list[bool] = []

    @FUZZ
    @given(data=mutants(seeds[name]))
    def one(data: bytes) -> None:
        path.write_bytes(data)
        loaded.append(read_or_refuse(reader, path) is None)

    one()
    fault_log(f"{reader.file} ({name} reader): random bytes, truncations, bit flips",
              len(loaded), len(loaded), f"nothing: {len(loaded) - sum(loaded)} refused in one "
              f"line naming the file, {sum(loaded)} loaded")


# --------------------------------------------------------- the files that broke a reader

def _npy_claiming(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """An .npy header for ``shape`` and ``descr``, then 8 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + bytes(8)


def _mat_data_type(seed: bytes, mdtype: int) -> bytes:
    """The seed .mat with its data element's type code replaced."""
    at = 128 + 8 + 16 + 16 + 8  # file header, matrix tag, flags, dims (2 int32), name ('ff')
    assert struct.unpack_from("<I", seed, at)[0] == 2  # miUINT8
    return seed[:at] + struct.pack("<I", mdtype) + seed[at + 4:]


def _dds_without_pixel_format() -> bytes:
    """A DDS image (in a file named .png: Pillow goes by the content) whose pixel format
    flags are 0."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(GRAY).convert("RGB").save(buf, format="DDS")
    return buf.getvalue()[:80] + bytes(4) + buf.getvalue()[84:]


def _netcdf_gcol_loop(seed: bytes) -> bytes:
    """The seed netCDF with the free space of its global heap made 0 bytes long: HDF5 then
    walks the heap forever."""
    out = bytearray(seed)
    gcol = seed.index(b"GCOL")
    pos = gcol + 16
    while struct.unpack_from("<H", seed, pos)[0] != 0:  # objects up to the free space
        pos += 16 + -(-struct.unpack_from("<Q", seed, pos + 8)[0] // 8) * 8
    struct.pack_into("<Q", out, pos + 8, 0)
    return bytes(out)


#: reader, the broken file made from the reader's valid one, what the refusal says; the
#: comment says what the reader did before.
CRAFTED: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    # ValueError (cannot reshape): the size 2**31 * 2**31 * 4 wrapped to 0 in np.prod
    "idx dims overflow": ("idx-images",
                          lambda s: gzip.compress(struct.pack(">4I", 2051, 2**31, 2**31, 4)),
                          "IDX header says shape (2147483648, 2147483648, 4)"),
    # MemoryError: numpy allocated the 7.3 TiB the header claims
    "npy claims terabytes": ("ising-observed-npy", lambda s: _npy_claiming((10**6, 10**6)),
                             "header claims shape (1000000, 1000000)"),
    # SyntaxError from numpy's parser of the header's dtype (found by this fuzzing)
    "npy dtype ','": ("ising-observed-npy", lambda s: _npy_claiming((0, 0), ","),
                      "not a readable .npy array"),
    # crash (SIGSEGV) in scipy's loadmat: an unknown data type indexes past a table
    "mat unknown data type": ("frey-mat", lambda s: _mat_data_type(s, 66),
                              "data element of unknown type 66"),
    # NotImplementedError from Pillow
    "dds pixel format": ("png", lambda s: _dds_without_pixel_format(), "Unknown pixel format"),
    # TypeError: an .npy where an .npz belongs broke the 'with' statement
    "npy as checkpoint": ("svi-checkpoint", lambda s: _npy(WEIGHTS), "corrupt"),
    "npy as compact npz": ("compact-npz", lambda s: _npy(FF), "holds one .npy array"),
    # ValueError from make_couplings: could not convert string to float
    "text couplings": ("ising-coupling-npz",
                       lambda s: _npz(horizontal=np.full((6, 7), "a"),
                                      vertical=np.full((5, 8), "b")), "finite real numbers"),
    # the messages did not name the file
    "image not binary": ("ising-image-npy", lambda s: _npy(np.full((6, 8), 3)), "binary"),
    "observed not finite": ("ising-observed-npy", lambda s: _npy(np.full((6, 8), np.nan)),
                            "NaN or infinite"),
    # values wrapped silently (300 -> 44), an empty file gave an empty image
    "letterA out of range": ("letterA-csv", lambda s: b"300,1\n2,3", "integers 0-255"),
    "letterA empty": ("letterA-csv", lambda s: b"", "found nothing"),
    # UnicodeDecodeError, RecursionError; a JSON array was returned as the metrics
    "metrics not UTF-8": ("metrics-json", lambda s: b'{"a": "\xff"}', "not UTF-8"),
    "metrics nested deep": ("metrics-json", lambda s: b"[" * 100_000, "not valid JSON"),
    "metrics an array": ("metrics-json", lambda s: b"[1, 2]", "holds a JSON array"),
    # hung for ever in the HDF5 C library
    "netcdf heap loop": ("netcdf", _netcdf_gcol_loop, "hangs the HDF5 library"),
}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.slow) if c.startswith("netcdf") else c for c in CRAFTED])
def test_crafted_files_that_broke_a_reader_are_refused(case: str, seeds: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    name, make, needle = CRAFTED[case]
    reader = READERS[name]
    path = tmp_path / reader.file
    path.write_bytes(make(seeds[name]))
    refusal = read_or_refuse(reader, path)
    assert refusal is not None and needle in str(refusal), refusal
