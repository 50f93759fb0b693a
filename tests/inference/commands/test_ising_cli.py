"""``varbayes ising denoise | compare | gap`` end to end with tiny settings, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varbayes.inference.cli import main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

TINY = {"cavi": [], "svi": ["--iters", "30"], "svi-score": ["--iters", "5", "--particles", "2"],
        "gibbs": ["--iters", "10", "--burn-in", "2", "--chains", "2"], "icm": [],
        "exact": []}


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("method", list(TINY))
def test_denoise_every_method_writes_its_files(method, tmp_path, capsys):
    out = tmp_path / method
    code, stdout, _ = run(["ising", "denoise", "--image", "digits:3", "--sigma", "0.8",
                           "--method", method, "--out", str(out), "--quiet", *TINY[method]],
                          capsys)
    assert code == 0 and "pixel error" in stdout
    m = metrics(out)
    assert {"pixel_error", "elbo", "log_evidence", "iterations", "seconds"} <= set(m)
    assert 0 <= m["pixel_error"] <= 1 and m["iterations"] >= 1 and m["seconds"] > 0
    with np.load(out / "posterior.npz") as f:
        assert f["mean"].shape == f["observed"].shape == (8, 8)
        assert np.all(np.abs(f["mean"]) <= 1)
    assert (out / "panel.png").stat().st_size > 0 and (out / "history.png").stat().st_size > 0
    if method == "exact":
        assert m["log_evidence"] is not None and m["log_p_x"] < m["log_evidence"]
    if method in ("cavi", "svi", "svi-score"):
        assert m["elbo"] is not None


def test_exact_bounds_cavi_on_the_same_data(tmp_path, capsys):
    args = ["ising", "denoise", "--image", "digits:5", "--seed", "3", "--quiet"]
    assert main([*args, "--method", "cavi", "--out", str(tmp_path / "c")]) == 0
    assert main([*args, "--method", "exact", "--out", str(tmp_path / "e")]) == 0
    assert metrics(tmp_path / "c")["elbo"] <= metrics(tmp_path / "e")["log_evidence"]


def test_observed_flip_image_without_clean_reference(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.where(rng.random((6, 9)) < 0.5, 1, -1).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    code, stdout, _ = run(["ising", "denoise", "--observed", str(tmp_path / "x.npy"),
                           "--noise", "flip", "--flip-prob", "0.2", "--method", "icm",
                           "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0 and "no clean image" in stdout
    assert metrics(tmp_path / "o")["pixel_error"] is None
    with np.load(tmp_path / "o" / "posterior.npz") as f:
        np.testing.assert_array_equal(f["observed"], x)


def test_per_edge_couplings_from_npz(tmp_path, capsys):
    np.savez(tmp_path / "J.npz", horizontal=np.full((8, 7), 0.5), vertical=np.full((7, 8), 0.5))
    argv = ["ising", "denoise", "--image", "digits:1", "--method", "exact", "--quiet"]
    assert main([*argv, "--coupling", str(tmp_path / "J.npz"), "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--coupling", "0.5", "--out", str(tmp_path / "b")]) == 0
    assert metrics(tmp_path / "a")["log_evidence"] == pytest.approx(
        metrics(tmp_path / "b")["log_evidence"], rel=1e-12)


def test_compare_writes_table_metrics_and_figure(tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, _ = run(["ising", "compare", "--image", "digits:0", "--iters", "20",
                           "--out", str(out), "--quiet"], capsys)
    assert code == 0 and "| exact |" in stdout
    table = (out / "compare.md").read_text()
    for label in ("threshold", "icm", "cavi-parallel", "cavi-checkerboard", "svi",
                  "svi-score", "gibbs", "exact"):
        assert f"| {label} |" in table
    m = metrics(out)
    assert m["exact_log_evidence"] >= m["cavi_checkerboard_elbo"]
    assert (out / "compare.png").stat().st_size > 0


def test_gap_command(tmp_path, capsys):
    out = tmp_path / "gap"
    code, stdout, _ = run(["ising", "gap", "--size", "4", "--points", "5", "--repeats", "1",
                           "--out", str(out), "--quiet"], capsys)
    assert code == 0 and "peaks at" in stdout
    m = metrics(out)
    assert m["min_gap_nats"] >= -1e-9
    assert (out / "gap.png").is_file() and len((out / "gap.csv").read_text().splitlines()) == 6


def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


BAD = {
    "not binary": (lambda t: ["--image", _npy(t, "c.npy", np.array([[0.0, 1.0], [1, -1]]))],
                   "binary"),
    "sigma zero": (lambda t: ["--image", "digits:1", "--sigma", "0"], "--sigma must be > 0"),
    "sigma negative": (lambda t: ["--image", "digits:1", "--sigma", "-1"], "--sigma"),
    "flip 0.5": (lambda t: ["--image", "digits:1", "--noise", "flip", "--flip-prob", "0.5"],
                 "--flip-prob must be in (0, 0.5)"),
    "flip 0": (lambda t: ["--image", "digits:1", "--noise", "flip", "--flip-prob", "0"],
               "--flip-prob"),
    "damping 0": (lambda t: ["--image", "digits:1", "--damping", "0"],
                  "--damping must be in (0, 1]"),
    "damping 1.5": (lambda t: ["--image", "digits:1", "--damping", "1.5"], "--damping"),
    "nan": (lambda t: ["--observed", _npy(t, "n.npy", np.array([[0.1, np.nan], [1, 1]]))],
            "NaN or infinite"),
    "inf": (lambda t: ["--observed", _npy(t, "i.npy", np.array([[0.1, np.inf], [1, 1]]))],
            "NaN or infinite"),
    "shapes": (lambda t: ["--image", "digits:1", "--observed", _npy(t, "s.npy", np.ones((5, 5)))],
               "shape"),
    "coupling shapes": (lambda t: ["--image", "digits:1", "--coupling",
                                   _save_npz(t, np.zeros((8, 8)), np.zeros((7, 8)))], "shapes"),
    "too large": (lambda t: ["--image", "shapes", "--method", "exact"], "<= 14"),
    "flip not ±1": (lambda t: ["--observed", _npy(t, "f.npy", np.array([[0.3, 1.0]])),
                               "--noise", "flip"], "±1"),
    "no input": (lambda t: [], "--image"),
}


def _save_npz(tmp_path, horizontal, vertical):
    path = tmp_path / "J.npz"
    np.savez(path, horizontal=horizontal, vertical=vertical)
    return str(path)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_with_exit_status_2(case, tmp_path, capsys):
    make_args, match = BAD[case]
    code, _, err = run(["ising", "denoise", *make_args(tmp_path), "--out",
                        str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
