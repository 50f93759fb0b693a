"""``varbayes reproduce aevb-fig2`` on digits with a tiny budget, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varbayes.inference.cli import main

#: end-to-end runs: not in `make test-fast`
pytestmark = pytest.mark.slow


def test_fig2_writes_the_figure_the_report_and_every_curve(tmp_path):
    out = tmp_path / "fig2"
    assert main(["reproduce", "aevb-fig2", "--datasets", "digits", "--latents", "2,3",
                 "--budget", "40", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["experiment"] == "aevb-fig2" and m["seconds_per_curve"] == 10.0
    for z in (2, 3):
        for method, key in (("AEVB", "aevb"), ("wake-sleep", "wake_sleep")):
            run = out / "runs" / f"digits-z{z}-{method}"
            r = json.loads((run / "metrics.json").read_text())
            assert r["objective"] == ("elbo" if method == "AEVB" else "wake-sleep")
            header = json.loads(np.load(run / "checkpoint.npz")["header"].tobytes())
            assert r["latent"] == z and header["meta"]["vae"]["hidden"] == [200]
            assert header["options"]["optimizer"] == "adagrad"
            assert m[f"digits_z{z}_{key}_test"] == pytest.approx(r["test_elbo"])
            assert m[f"digits_z{z}_{key}_samples"] == r["n_train"] * r["epochs"]
        assert 0 < m[f"digits_z{z}_fraction_of_paper_axis"] < 1e-2
    report = (out / "report.md").read_text()
    assert report.count("| digits |") == 2 and "AEVB converges faster" in report
    assert (out / "aevb_fig2.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, match", [
    (["--latents", "0"], "--latents must be >= 1"),
    (["--latents", "a"], "--latents must be comma-separated integers"),
    (["--datasets", "cifar"], "'cifar' is not one of"),
    (["--budget", "0"], "--budget must be > 0"),
])
def test_bad_input_one_line(argv, match, tmp_path, capsys):
    assert main(["reproduce", "aevb-fig2", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()
