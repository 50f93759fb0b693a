"""Loaders on the shared copies: shapes, dtypes, label counts, and clear errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.data import datasets
from varbayes.inference.data import files as datafiles
from varbayes.models.errors import VarbayesError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_is_embedded_and_scaled():
    d = datasets.load("digits")
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert d.x_train.dtype == np.float32 and d.image_shape == (8, 8)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert np.array_equal(np.unique(d.y_train), np.arange(10))
    again = datasets.load("digits")
    assert np.array_equal(d.x_test, again.x_test), "the split must be fixed"


@pytest.mark.slow
def test_mnist_shapes_dtypes_and_label_counts(shared_data):
    d = datasets.load("mnist")
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert np.bincount(d.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(d.y_test).tolist() == MNIST_TEST_COUNTS
    assert d.x_train.mean() * 255 == pytest.approx(33.3184, abs=1e-3)


def test_binarized_mnist_static_and_sorted_test_labels(shared_data):
    d = datasets.load("binarized-mnist")
    assert d.binary and d.x_train.shape == (50000, 784) and d.x_valid.shape == (10000, 784)
    assert set(np.unique(d.x_test)) == {0.0, 1.0}
    assert int(d.x_test.sum()) == 1038896  # ones in the test split, from the data README
    assert np.bincount(d.y_test).tolist() == MNIST_TEST_COUNTS


def test_frey_face(shared_data):
    d = datasets.load("frey-face")
    assert d.image_shape == (28, 20) and len(d.x_train) + len(d.x_test) == 1965
    assert d.x_train.shape[1] == 560 and d.y_train is None
    x = np.concatenate([d.x_train, d.x_test]) * 255
    assert x.mean() == pytest.approx(154.4609, abs=1e-3)


def test_binary_images(shared_data):
    a = datasets.load_binary_image("letterA")
    assert a.shape == (128, 128) and set(np.unique(a)) == {-1, 1}
    assert int((a == 1).sum()) == 4282  # from the letterA README
    s = datasets.load_binary_image("shapes")
    assert s.shape == (64, 64) and 0.1 < (s == 1).mean() < 0.6
    assert np.array_equal(s, datasets.load_binary_image("shapes"))
    assert datasets.load_binary_image("digits:5").shape == (8, 8)


def test_png_and_pgm_paths(tmp_path):
    import matplotlib.image as mpimg

    img = datasets.shapes_image(32).astype(float) * 0.4 + 0.5
    mpimg.imsave(tmp_path / "x.png", img, cmap="gray", vmin=0, vmax=1)
    assert np.array_equal(datasets.load_binary_image(str(tmp_path / "x.png")),
                          datasets.shapes_image(32))
    pgm = tmp_path / "x.pgm"
    g = (img * 255).astype(np.uint8)
    pgm.write_bytes(b"P5\n# made by a test\n32 32\n255\n" + g.tobytes())
    assert np.array_equal(datasets.load_binary_image(str(pgm)), datasets.shapes_image(32))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(VarbayesError, match=r"cannot read image .*bad\.png"):
        datasets.load_binary_image(str(tmp_path / "bad.png"))


def test_dynamic_binarize_is_bernoulli():
    rng = np.random.default_rng(0)
    x = np.full((2000, 50), 0.3, dtype=np.float32)
    b = datasets.dynamic_binarize(x, rng)
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    assert b.mean() == pytest.approx(0.3, abs=0.005)
    assert not np.array_equal(b, datasets.dynamic_binarize(x, rng)), "fresh draw each call"


def _copy_mnist(shared: Path, tmp: Path) -> Path:
    shutil.copytree(shared / "mnist", tmp / "mnist")
    return tmp


def test_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(VarbayesError) as e:
        datasets.load("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist") in msg and "varbayes data download mnist" in msg


def test_checksum_mismatch_names_both_sums(shared_data, tmp_path):
    root = _copy_mnist(shared_data, tmp_path)
    labels = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # same size and magic, one label changed
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(VarbayesError) as e:
        datasets.load("mnist", data_dir=root)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert datafiles.md5_file(labels) in msg


@pytest.mark.slow
def test_truncated_and_wrong_magic_idx(shared_data, tmp_path):
    root = _copy_mnist(shared_data, tmp_path)
    images = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-784]))
    with pytest.raises(VarbayesError, match=r"shape \(10000, 28, 28\) = 7840000 bytes.*truncated"):
        datasets.load("mnist", data_dir=root)
    images.write_bytes(images.read_bytes()[:5000])  # a cut gzip stream
    with pytest.raises(VarbayesError, match="truncated or not gzip"):
        datasets.load("mnist", data_dir=root)
    images.write_bytes(gzip.compress((2049).to_bytes(4, "big") + raw[4:]))
    with pytest.raises(VarbayesError, match="wrong IDX magic number 2049, expected 2051"):
        datasets.load("mnist", data_dir=root)


@pytest.mark.slow
def test_original_formats_parse_to_the_same_arrays(shared_data, tmp_path):
    """.amat text, .mat and .csv originals verify against the same content hashes."""
    from scipy.io import savemat

    b = datafiles.load_npz(shared_data / "binarized-mnist" / "binarized_mnist_packbits.npz")
    folder = tmp_path / "binarized-mnist"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        rows = np.unpackbits(b[split], axis=1, count=784)
        lines = "\n".join(" ".join(map(str, r)) for r in rows[: 2 if split != "test" else None])
        (folder / f"binarized_mnist_{split}.amat").write_text(lines + "\n")
    with pytest.raises(VarbayesError, match="content checksum mismatch for 'train'"):
        datasets.load("binarized-mnist", data_dir=tmp_path)  # train/valid cut to two rows
    test = datafiles.parse_amat(folder / "binarized_mnist_test.amat")
    datafiles.check_content("binarized-mnist", "test", test, folder)

    ff = datafiles.load_npz(shared_data / "frey-face" / "frey_rawface.npz")["ff"]
    (tmp_path / "frey-face").mkdir()
    savemat(tmp_path / "frey-face" / "frey_rawface.mat", {"ff": ff})
    d = datasets.load("frey-face", data_dir=tmp_path)
    assert d.x_train.shape == (1765, 560)


def test_colour_alpha_and_16_bit_images_read_as_luma_in_0_1(tmp_path):
    """Pillow reads the image: RGB(A) becomes ITU-R 601 luma, 16-bit grey keeps its range."""
    from PIL import Image

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, :3] = (255, 0, 0)
    rgba[0, 1, :3] = (0, 255, 0)
    rgba[0, 2, :3] = (0, 0, 255)
    rgba[1] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    g = datasets.read_grayscale(tmp_path / "c.png")
    np.testing.assert_allclose(g, [[0.299, 0.587, 0.114], [1, 1, 1]], atol=2e-3)
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(deep).save(tmp_path / "d.png")  # mode I;16
    np.testing.assert_allclose(datasets.read_grayscale(tmp_path / "d.png"), deep / 65535.0)
