"""Datasets: one API returning float arrays in [0, 1], labels and metadata.

``load(name)`` gives a :class:`Dataset` for ``digits`` (scikit-learn's bundled 8×8 digits,
the embedded default that needs no files), ``mnist``, ``fashion-mnist``,
``binarized-mnist`` (Larochelle's static binarization) and ``frey-face``.
``load_binary_image(spec)`` gives a ±1 image for Ising denoising: ``letterA``, ``shapes``,
``digits:N`` or a PNG/PGM path. ``dynamic_binarize`` draws a fresh Bernoulli image.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from varbayes.inference.data import files as df
from varbayes.models.errors import VarbayesError

PathLike = str | os.PathLike[str]

DATASETS = ("digits", "mnist", "fashion-mnist", "binarized-mnist", "frey-face")
IMAGES = ("letterA", "shapes", "digits:N", "PATH.png|PATH.pgm")


class Dataset(NamedTuple):
    """A dataset split into train and test (and validation, where the source has one)."""

    name: str
    x_train: np.ndarray
    """(N_train, D) float32 in [0, 1]; rows are images flattened in row-major order."""
    y_train: np.ndarray | None
    """(N_train,) int64 class labels, or None when the source has none."""
    x_test: np.ndarray
    """(N_test, D) float32 in [0, 1]."""
    y_test: np.ndarray | None
    """(N_test,) int64 labels, or None."""
    image_shape: tuple[int, int]
    """(rows, cols) of one image; rows * cols == D."""
    binary: bool
    """True when every value is exactly 0 or 1 (static binarization)."""
    source: str
    """Where the arrays came from (a folder, or 'scikit-learn')."""
    x_valid: np.ndarray | None = None
    """(N_valid, D) float32 validation split, where the source defines one."""


def dynamic_binarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh Bernoulli draw per pixel: ``x_bin ~ Bernoulli(x)``, same shape, float32.

    Call it once per epoch for dynamic binarization of any [0, 1] dataset.
    """
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load(name: str, data_dir: PathLike | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name, verifying its files first.

    Parameters
    ----------
    name : one of :data:`DATASETS`.
    data_dir : data root; default ``$VARBAYES_DATA``, else ``~/.cache/varbayes``.
    download : fetch missing files from the canonical source first (see
        :func:`.download.download`); ``digits`` never needs it.
    """
    if download and name in df.SOURCES:
        from varbayes.inference.data.download import download as fetch

        fetch(name, data_dir)
    loaders = {"digits": lambda: _digits(),
               "mnist": lambda: _idx("mnist", data_dir),
               "fashion-mnist": lambda: _idx("fashion-mnist", data_dir),
               "binarized-mnist": lambda: _binarized_mnist(data_dir),
               "frey-face": lambda: _frey_face(data_dir)}
    if name not in loaders:
        raise VarbayesError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return loaders[name]()


# ----------------------------------------------------------------------------- the loaders

def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, (8, 8), False, "scikit-learn")


def _require(name: str, path: Path, data_dir: PathLike | None) -> Path:
    if not path.is_file():
        raise VarbayesError(df.missing_file_error(name, path, data_dir))
    return path


def _idx(name: str, data_dir: PathLike | None) -> Dataset:
    folder = df.dataset_dir(name, data_dir)
    arrays = []
    for remote in df.SOURCES[name].files:
        path = _require(name, folder / remote.name, data_dir)
        magic = 2051 if "images" in remote.name else 2049
        arr = df.parse_idx_gz(path, magic)
        df.check_md5(name, path, remote.md5)  # type: ignore[arg-type]
        arrays.append(arr)
    xtr, ytr, xte, yte = arrays
    to_x = lambda a: (a.reshape(len(a), -1) / np.float32(255.0)).astype(np.float32)  # noqa: E731
    return Dataset(name, to_x(xtr), ytr.astype(np.int64), to_x(xte), yte.astype(np.int64),
                   (28, 28), False, str(folder))


def _content_arrays(name: str, data_dir: PathLike | None, compact: str) -> dict[str, np.ndarray]:
    """Arrays of a content-hashed dataset, from its compact .npz or its original files."""
    folder = df.dataset_dir(name, data_dir)
    src = df.SOURCES[name]
    if (folder / compact).is_file():
        raw = df.load_npz(folder / compact)
        arrays = {k: _unpack(name, k, raw) for k in src.content_sha256}
        where = folder / compact
        for key, arr in arrays.items():
            df.check_content(name, key, arr, where)
        return arrays
    arrays = {}
    for remote in src.files:
        path = _require(name, folder / remote.name, data_dir)
        for key, arr in df.CONTENT_PARSERS[remote.name](path).items():
            df.check_content(name, key, arr, path)
            arrays[key] = arr
    return arrays


def _unpack(name: str, key: str, raw: dict[str, np.ndarray]) -> np.ndarray:
    if key not in raw:
        raise VarbayesError(f"{name}: compact file lacks array '{key}'; it is corrupt")
    if name == "binarized-mnist":
        return np.unpackbits(raw[key], axis=1, count=784)
    return raw[key]


#: MNIST test label counts; Larochelle's test split is the MNIST test set sorted by label.
_MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def _binarized_mnist(data_dir: PathLike | None) -> Dataset:
    a = _content_arrays("binarized-mnist", data_dir, "binarized_mnist_packbits.npz")
    f = lambda k: a[k].astype(np.float32)  # noqa: E731
    y_test = np.repeat(np.arange(10), _MNIST_TEST_COUNTS).astype(np.int64)
    return Dataset("binarized-mnist", f("train"), None, f("test"), y_test, (28, 28), True,
                   str(df.dataset_dir("binarized-mnist", data_dir)), x_valid=f("valid"))


#: Frey Face has no split; we hold out a fixed random 200 of the 1965 faces.
FREY_N_TEST = 200


def _frey_face(data_dir: PathLike | None) -> Dataset:
    ff = _content_arrays("frey-face", data_dir, "frey_rawface.npz")["ff"]
    x = (ff.T / np.float32(255.0)).astype(np.float32)  # (1965, 560), rows of 28x20 images
    perm = np.random.default_rng(0).permutation(len(x))
    te, tr = perm[:FREY_N_TEST], perm[FREY_N_TEST:]
    return Dataset("frey-face", x[tr], None, x[te], None, (28, 20), False,
                   str(df.dataset_dir("frey-face", data_dir)))


# ------------------------------------------------------------------- binary images for Ising

def load_binary_image(spec: str, data_dir: PathLike | None = None) -> np.ndarray:
    """A clean ±1 image for Ising denoising.

    Parameters
    ----------
    spec : ``letterA`` (128×128, binarized at its mean, +1 = letter), ``shapes``
        (64×64 synthetic shapes, deterministic), ``digits:N`` (scikit-learn digit N, 8×8,
        +1 where intensity > 0.5) or a path to a PNG or PGM file (binarized at its mean).

    Returns
    -------
    (H, W) int8 array of -1/+1.
    """
    if spec == "letterA":
        folder = df.dataset_dir("letterA", data_dir)
        path = _require("letterA", folder / "letterA.csv", data_dir)
        img = df.parse_letter_csv(path)
        df.check_content("letterA", "image", img, path)
        return _threshold(img.astype(np.float64))
    if spec == "shapes":
        return shapes_image()
    if spec.startswith("digits:"):
        return _digit_image(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".png", ".pgm") or path.exists():
        return _threshold(read_grayscale(path))
    raise VarbayesError(f"unknown image '{spec}': use letterA, shapes, digits:N "
                        "or a path to a .png/.pgm file")


def _threshold(gray: np.ndarray) -> np.ndarray:
    """+1 above the mean intensity, -1 otherwise (pmtk3's rule)."""
    return np.where(gray > gray.mean(), 1, -1).astype(np.int8)


def _digit_image(spec: str) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images
    try:
        n = int(spec.split(":", 1)[1])
    except ValueError:
        raise VarbayesError(f"'{spec}': N in digits:N must be an integer index") from None
    if not 0 <= n < len(images):
        raise VarbayesError(f"'{spec}': N must be in [0, {len(images) - 1}]")
    return np.where(images[n] / 16.0 > 0.5, 1, -1).astype(np.int8)


def shapes_image(size: int = 64) -> np.ndarray:
    """A deterministic (size, size) ±1 image: a disc, a square, a triangle and a bar."""
    r, c = np.mgrid[0:size, 0:size] / size
    disc = (r - 0.3) ** 2 + (c - 0.3) ** 2 < 0.17**2
    square = (np.abs(r - 0.72) < 0.15) & (np.abs(c - 0.28) < 0.15)
    triangle = (r > 0.12) & (r < 0.5) & (np.abs(c - 0.75) < (r - 0.12) * 0.5)
    bar = (np.abs(r - 0.75) < 0.05) & (c > 0.55) & (c < 0.95)
    return np.where(disc | square | triangle | bar, 1, -1).astype(np.int8)


def read_grayscale(path: Path) -> np.ndarray:
    """Read an image file (PNG, PGM/PPM, JPEG, anything Pillow opens) as a float (H, W)
    grayscale array in [0, 1]; colour becomes ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B),
    an alpha channel is dropped."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise VarbayesError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "F":  # float grayscale: taken as it is
                img = np.asarray(im, dtype=np.float64)
            elif im.mode.startswith("I"):  # 16- or 32-bit integer grayscale
                img = np.asarray(im, dtype=np.float64)
                img = img / (65535.0 if img.max(initial=0) <= 65535 else 4294967295.0)
            else:
                img = np.asarray(im.convert("RGB").convert("F"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError, EOFError, NotImplementedError, struct.error, MemoryError) as e:
        raise VarbayesError(f"cannot read image {path}: {df.one_line(e)}") from None
    if img.ndim != 2 or img.size == 0:
        raise VarbayesError(f"cannot read image {path}: expected a 2-D image, got {img.shape}")
    return img
