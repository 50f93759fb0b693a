"""The download path, against a local HTTP server on 127.0.0.1 serving the shared copies."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.data import datasets
from varbayes.inference.data import files as datafiles
from varbayes.inference.data.download import download
from varbayes.models.errors import VarbayesError


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; paths under /cut/ send a full Content-Length but only half the body."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/cut/"):
            return super().do_GET()
        body = Path(self.directory, self.path[len("/cut/"):]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("served")
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_download_mnist_verifies_and_loads(server, shared_data, tmp_path):
    url, root = server
    shutil.copytree(shared_data / "mnist", root / "mnist")
    paths = download("mnist", tmp_path, mirrors=[f"{url}/mnist/"])
    assert [p.name for p in paths] == [f.name for f in datafiles.SOURCES["mnist"].files]
    assert _leftovers(tmp_path / "mnist") == sorted(p.name for p in paths)
    assert datasets.load("mnist", data_dir=tmp_path).x_train.shape == (60000, 784)


@pytest.mark.slow
def test_interrupted_transfer_leaves_nothing(server, shared_data, tmp_path):
    url, root = server
    shutil.copytree(shared_data / "mnist", root / "mnist")
    with pytest.raises(VarbayesError, match=r"transfer interrupted after \d+ of \d+ bytes"):
        download("mnist", tmp_path, mirrors=[f"{url}/cut/mnist/"])
    assert _leftovers(tmp_path / "mnist") == []


@pytest.mark.slow
def test_bad_checksum_download_is_not_kept(server, shared_data, tmp_path):
    url, root = server
    (root / "mnist").mkdir()
    for f in datafiles.SOURCES["mnist"].files:
        data = (shared_data / "mnist" / f.name).read_bytes()
        (root / "mnist" / f.name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(VarbayesError, match="could not download train-images"):
        download("mnist", tmp_path, mirrors=[f"{url}/mnist/"])
    assert _leftovers(tmp_path / "mnist") == []


@pytest.mark.slow
def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(VarbayesError, match=r"could not download letterA\.csv: http://127\.0\.0\.1:9/"):
        download("letterA", tmp_path, mirrors=["http://127.0.0.1:9/"], timeout=2)


def test_content_hashed_sources_download(server, shared_data, tmp_path):
    """letterA (CSV) and Frey Face (.mat) verify by the hash of their parsed arrays."""
    from scipy.io import savemat

    url, root = server
    shutil.copy(shared_data / "letterA" / "letterA.csv", root / "letterA.csv")
    ff = datafiles.load_npz(shared_data / "frey-face" / "frey_rawface.npz")["ff"]
    savemat(root / "frey_rawface.mat", {"ff": ff})
    download("letterA", tmp_path, mirrors=[url])
    download("frey-face", tmp_path, mirrors=[url])
    assert np.array_equal(datasets.load_binary_image("letterA", tmp_path),
                          datasets.load_binary_image("letterA", shared_data))
    assert datasets.load("frey-face", data_dir=tmp_path).x_test.shape == (200, 560)
    savemat(root / "frey_rawface.mat", {"ff": ff[:, :100]})
    with pytest.raises(VarbayesError, match="content checksum mismatch"):
        download("frey-face", tmp_path / "other", mirrors=[url])
    assert _leftovers(tmp_path / "other" / "frey-face") == []


@pytest.fixture
def local_mnist_source(server, shared_data, monkeypatch) -> None:
    """Point the canonical MNIST URLs at the local server, which serves the shared copies."""
    url, root = server
    shutil.copytree(shared_data / "mnist", root / "mnist")
    src = datafiles.SOURCES["mnist"]
    local = tuple(f._replace(urls=(f"{url}/mnist/{f.name}",)) for f in src.files)
    monkeypatch.setitem(datafiles.SOURCES, "mnist", src._replace(files=local))


@pytest.mark.slow
def test_load_with_download_fetches_missing_files(local_mnist_source, tmp_path):
    with pytest.raises(VarbayesError, match="not found"):
        datasets.load("mnist", data_dir=tmp_path)
    d = datasets.load("mnist", data_dir=tmp_path, download=True)
    assert np.bincount(d.y_test).tolist()[:2] == [980, 1135]


@pytest.mark.slow
def test_vae_train_download_flag(local_mnist_source, tmp_path):
    """``--download`` on a command fetches the missing files before loading."""
    from varbayes.inference.cli import main

    argv = ["vae", "train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
            "--n-train", "100", "--n-test", "50", "--epochs", "1", "--hidden", "8",
            "--latent", "2", "--batch-size", "50", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2  # missing, no --download
    assert main([*argv, "--download", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
