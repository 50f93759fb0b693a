"""Where dataset files live, what they must hash to, and how to parse the original formats.

A data directory holds one subfolder per dataset, named as the dataset (``mnist/``,
``binarized-mnist/``, ``frey-face/``, ``letterA/``). It is ``--data-dir`` if given, else
``$VARBAYES_DATA``, else ``~/.cache/varbayes``.

Two kinds of check:

* *file* checksums (MD5, as published by the dataset's authors) for the MNIST family;
* *content* hashes, the SHA-256 of the parsed uint8 array in C order, for datasets whose
  original files carry no published checksum (binarized MNIST, Frey Face, letterA). They
  let the compact copies (``.npz``) and the original formats (``.amat``, ``.mat``, ``.csv``)
  verify against the same number.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from varbayes.models.errors import VarbayesError

ENV_VAR = "VARBAYES_DATA"
DEFAULT_DIR = Path("~/.cache/varbayes")


class RemoteFile(NamedTuple):
    """One file of a dataset as its canonical source publishes it."""

    name: str
    """File name inside the dataset folder."""
    urls: tuple[str, ...]
    """Full download URLs, tried in order."""
    md5: str | None = None
    """Published MD5 of the file bytes, or None when none is published."""


class Source(NamedTuple):
    """A dataset's canonical files plus the content hashes of its parsed arrays."""

    files: tuple[RemoteFile, ...]
    content_sha256: dict[str, str]
    """Parsed-array key -> SHA-256 of its uint8 bytes in C order (empty for MD5 datasets)."""
    how_to_get: str


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/")
_FASHION_MIRRORS = ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/"
                    "master/data/fashion/",)
_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MNIST_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")
_FASHION_MD5 = ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _idx_files(mirrors: tuple[str, ...], md5s: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, tuple(m + n for m in mirrors), h)
                 for n, h in zip(_IDX_FILES, md5s, strict=True))


SOURCES: dict[str, Source] = {
    "mnist": Source(_idx_files(_MNIST_MIRRORS, _MNIST_MD5), {},
                    "run 'varbayes data download mnist'"),
    "fashion-mnist": Source(_idx_files(_FASHION_MIRRORS, _FASHION_MD5), {},
                            "run 'varbayes data download fashion-mnist'"),
    "binarized-mnist": Source(
        tuple(RemoteFile(f"binarized_mnist_{s}.amat", (f"{_LAROCHELLE}binarized_mnist_{s}.amat",))
              for s in ("train", "valid", "test")),
        {"train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
         "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
         "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"},
        "run 'varbayes data download binarized-mnist' (or place binarized_mnist_packbits.npz)"),
    "frey-face": Source(
        (RemoteFile("frey_rawface.mat", ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)),),
        {"ff": "fbd70c2c992104024a20f4d253da1a1132eb6bf8ed142dccbe7d2b1743b705c4"},
        "run 'varbayes data download frey-face' (or place frey_rawface.npz)"),
    "letterA": Source(
        (RemoteFile("letterA.csv", ("https://raw.githubusercontent.com/probml/probml-data/"
                                    "60941078945b9a2b48b37f91f1f06a7f1a0ec79a/data/letterA.csv",)),),
        {"image": "2db14ef84ef04f2930af78521976ca8c617ac477eeab6220b73e40373e72566e"},
        "run 'varbayes data download letterA'"),
}


def data_root(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The data directory in force and where that choice came from (for messages)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    return DEFAULT_DIR.expanduser(), "the default"


def dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<data root>/<name>``: the folder that holds one dataset's files."""
    return data_root(data_dir)[0] / name


def missing_file_error(name: str, path: Path, data_dir: str | os.PathLike[str] | None) -> str:
    """One line: where we looked for a dataset file and how to obtain it."""
    root, why = data_root(data_dir)
    return (f"{name}: {path.name} not found in {path.parent} (data dir {root}, from {why}); "
            f"{SOURCES[name].how_to_get}, or pass --data-dir")


def md5_file(path: Path) -> str:
    """Hex MD5 of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_array(a: np.ndarray) -> str:
    """Hex SHA-256 of an array's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def check_md5(name: str, path: Path, expected: str) -> None:
    """Raise when the file's MD5 differs from the published one; the file is not used."""
    got = md5_file(path)
    if got != expected:
        raise VarbayesError(f"{name}: checksum mismatch for {path}: md5 {got}, expected "
                            f"{expected}; the file was not used; delete it and download again")


def check_content(name: str, key: str, array: np.ndarray, where: Path) -> None:
    """Raise when a parsed array's SHA-256 differs from the recorded content hash."""
    expected = SOURCES[name].content_sha256[key]
    got = sha256_array(array)
    if got != expected:
        raise VarbayesError(f"{name}: content checksum mismatch for '{key}' in {where}: sha256 "
                            f"{got}, expected {expected}; the file was not used")


# ---------------------------------------------------------------- parsers of original formats

_IDX_MAGIC = {2051: 3, 2049: 1}  # images (n, rows, cols), labels (n,)
_FIX = "delete it and download it again"

#: What numpy, zipfile, gzip and zlib raise on an empty, truncated, corrupt or foreign
#: .npy/.npz/.gz file: SyntaxError and tokenize's error from numpy's header parser, KeyError
#: for an array missing from an .npz, NotImplementedError for an unknown zip compression,
#: MemoryError when a corrupt header claims terabytes, and more.
READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
               struct.error, SyntaxError, tokenize.TokenError, NotImplementedError,
               OverflowError, MemoryError)


def _read_at_most(f: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``f``, read in blocks: never more than that is held."""
    blocks = []
    while limit > 0 and (block := f.read(min(limit, 1 << 22))):
        blocks.append(block)
        limit -= len(block)
    return b"".join(blocks)


def parse_idx_gz(path: Path, expected_magic: int) -> np.ndarray:
    """Parse a gzipped IDX file (MNIST format) into a uint8 array.

    Raises a clear :class:`VarbayesError` for a truncated or corrupt gzip stream, a wrong
    magic number or a payload whose size disagrees with the header. At most one byte more
    than the header claims is decompressed, so a corrupt file cannot fill memory.
    """
    ndim = _IDX_MAGIC[expected_magic]
    offset = 4 + 4 * ndim
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(offset)
            if len(head) < offset:
                raise VarbayesError(f"{path}: IDX header is {len(head)} bytes, expected "
                                    f"{offset}; the file is truncated or corrupt: {_FIX}")
            magic = int.from_bytes(head[:4], "big")
            if magic != expected_magic:
                raise VarbayesError(f"{path}: wrong IDX magic number {magic}, expected "
                                    f"{expected_magic}; the file is corrupt or another "
                                    f"dataset's: {_FIX}")
            dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            size = math.prod(dims)
            raw = _read_at_most(f, size + 1)  # at EOF gzip checks the stream's CRC
    except (EOFError, OSError, zlib.error) as e:
        raise VarbayesError(f"{path} is truncated or not gzip ({one_line(e)}); {_FIX}"
                            ) from None
    if len(raw) != size:
        more = " or more" if len(raw) > size else ""
        raise VarbayesError(f"{path}: IDX header says shape {dims} = {size} bytes, but the "
                            f"file holds {len(raw)}{more}; it is truncated or corrupt: {_FIX}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a library's message may span several lines)."""
    return " ".join(str(e).split()) or type(e).__name__


def parse_amat(path: Path, n_features: int = 784) -> np.ndarray:
    """Parse Larochelle's text ``.amat`` (one line per image of 0/1 values) to uint8 (N, D)."""
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    digits = raw[(raw == ord("0")) | (raw == ord("1"))] - ord("0")
    n_lines = int(np.count_nonzero(raw == ord("\n"))) or 1
    if digits.size % n_features or digits.size // n_features not in (n_lines, n_lines + 1):
        raise VarbayesError(f"{path}: {digits.size} binary values on {n_lines} lines is not "
                            f"whole rows of {n_features}; the file is truncated or corrupt: "
                            f"{_FIX}")
    return digits.reshape(-1, n_features)


#: MAT v5 data element types whose data scipy reads (1-7, 9, 12, 13, 16-18). scipy looks the
#: type up in a table without a range check, so any other type in a data element crashes the
#: interpreter (SIGSEGV; scipy PR 25349, not merged as of scipy 1.17).
_MAT_DATA_TYPES = frozenset((1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18))
_MAT_NUMERIC_CLASSES = frozenset((4, *range(6, 16)))  # char, double, single, (u)int8-64
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MAT_MAX_INFLATED = 1 << 28  # bytes one compressed variable may inflate to


def _mat5_problem(raw: bytes) -> str | None:
    """What in a MAT v5 file would crash scipy's reader, or None.

    Walks the element tags in the order ``loadmat`` reads them. Only numeric and char
    variables are accepted (Frey's file holds one uint8 matrix): a cell, struct, sparse or
    object variable is refused rather than followed. MAT v4 and v7.3 files, which scipy
    reads in Python or refuses, pass through.
    """
    if len(raw) < 128 or 0 in raw[:4] or raw[124 + (raw[126] == ord("I"))] != 1:
        return None
    order = "<" if raw[126:128] == b"IM" else ">"
    pos = 128
    while pos < len(raw):
        if pos + 8 > len(raw):
            return "a cut variable tag"
        mdtype, nbytes = struct.unpack_from(order + "II", raw, pos)
        start, pos = pos + 8, pos + 8 + nbytes
        if mdtype == _MI_COMPRESSED:
            inflate = zlib.decompressobj()
            try:
                buf = inflate.decompress(raw[start:pos], _MAT_MAX_INFLATED)
            except zlib.error:
                return "a corrupt compressed variable"
            if inflate.unconsumed_tail:
                return f"a compressed variable of more than {_MAT_MAX_INFLATED} bytes"
            if len(buf) < 8 or struct.unpack_from(order + "I", buf)[0] != _MI_MATRIX:
                return "a compressed element that is not a matrix"
            why = _mat5_matrix_problem(buf, 8, order)
        elif mdtype == _MI_MATRIX:
            why = _mat5_matrix_problem(raw, start, order)
        else:
            why = f"a top-level element of type {mdtype}, not a matrix"
        if why:
            return why
    return None


def _mat5_matrix_problem(buf: bytes, pos: int, order: str) -> str | None:
    """What in the matrix whose array flags start at ``buf[pos]`` would crash scipy."""
    if pos + 16 > len(buf):
        return "a cut matrix header"
    flags = struct.unpack_from(order + "I", buf, pos + 8)[0]  # after the flags' own tag
    if flags & 0xFF not in _MAT_NUMERIC_CLASSES:
        return f"a variable of MATLAB class {flags & 0xFF}, not a numeric array"
    pos += 16
    for _ in range(4 if flags >> 11 & 1 else 3):  # dims, name, real part (imaginary part)
        if pos + 8 > len(buf):
            return "a cut data element"
        mdtype, nbytes = struct.unpack_from(order + "II", buf, pos)
        if mdtype >> 16:  # small element: type and size share the first word
            mdtype, pos = mdtype & 0xFFFF, pos + 8
        else:
            pos += 8 + nbytes + -nbytes % 8  # data padded to 8 bytes
        if mdtype not in _MAT_DATA_TYPES:
            return f"a data element of unknown type {mdtype}"
    return None


def parse_frey_mat(path: Path) -> np.ndarray:
    """Read ``ff`` (560, 1965) uint8 from Roweis's ``frey_rawface.mat`` (via scipy, once
    :func:`_mat5_problem` has checked that scipy can read the file without crashing)."""
    from scipy.io import loadmat

    try:
        why = _mat5_problem(path.read_bytes())
        if why is None:
            ff = np.asarray(loadmat(path)["ff"])
            if ff.ndim != 2 or ff.dtype.kind not in "biuf":
                why = f"'ff' is {ff.dtype} of shape {ff.shape}, not a 2-D array of numbers"
    except Exception as e:  # scipy raises many types for bad files
        why = f"not a MATLAB file with variable 'ff' ({one_line(e)})"
    if why is not None:
        raise VarbayesError(f"{path} is corrupt or not Frey Face's .mat ({why}): {_FIX}")
    return np.ascontiguousarray(ff, dtype=np.uint8)


def parse_letter_csv(path: Path) -> np.ndarray:
    """Read ``letterA.csv`` (128 lines of 128 integers, no header) into uint8 (128, 128)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: refused below
            img = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as e:
        raise VarbayesError(f"{path}: not a CSV of integers ({one_line(e)}): {_FIX}"
                            ) from None
    if img.size == 0 or not np.all((img >= 0) & (img <= 255) & (img == np.round(img))):
        raise VarbayesError(f"{path}: expected a CSV of integers 0-255, found "
                            f"{'nothing' if img.size == 0 else 'other values'}; the file is "
                            f"corrupt: {_FIX}")
    return img.astype(np.uint8)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` of plain arrays; pickled objects are refused (no code runs)."""
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            with z:
                return {k: z[k] for k in z.files}
    except READ_ERRORS as e:
        raise VarbayesError(f"{path}: not a readable .npz of plain arrays ({one_line(e)}): "
                            f"{_FIX}") from None
    raise VarbayesError(f"{path} holds one .npy array, not an .npz archive: {_FIX}")


#: Parsers that turn a downloaded original file into the arrays its content hashes cover.
CONTENT_PARSERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "binarized_mnist_train.amat": lambda p: {"train": parse_amat(p)},
    "binarized_mnist_valid.amat": lambda p: {"valid": parse_amat(p)},
    "binarized_mnist_test.amat": lambda p: {"test": parse_amat(p)},
    "frey_rawface.mat": lambda p: {"ff": parse_frey_mat(p)},
    "letterA.csv": lambda p: {"image": parse_letter_csv(p)},
}

