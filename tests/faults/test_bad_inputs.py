"""Issue 16's refused inputs: each is one line and exit 2, before any work, naming the option.

These are the regression tests of the numbered failures that a new user met: bad seeds, an
empty --out, an empty estimator list, --repeats 0 and a non-finite --j-max.
"""

from __future__ import annotations

import pytest

from varbayes.inference import io
from varbayes.inference.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["ising", "denoise", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["vae", "train", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["vae", "train", "--seed", str(2**32)], "--seed must be in [0, 4294967295]"),
    (["ising", "gap", "--repeats", "0"], "--repeats must be >= 1"),
    (["ising", "gap", "--j-max", "inf"], "--j-max must be a finite number > 0, got inf"),
    (["ising", "gap", "--j-max", "nan"], "--j-max must be a finite number > 0, got nan"),
    (["ising", "gap", "--points", "1"], "--points must be >= 2, got 1"),
    (["evidence", "RUN", "--estimators", ""], "--estimators must name at least one of"),
    (["evidence", "RUN", "--estimators", " , "], "--estimators must name at least one of"),
    (["ising", "denoise", "--image", "letterA", "--sigma", "1e-300"], "--sigma must be >= 1e-15"),
    (["ising", "gap", "--sigma", "1e-16"], "--sigma must be >= 1e-15, got 1e-16"),
    (["mcmc", "RUN", "--warmup", "0"], "--warmup must be >= 1, got 0"),
    (["compare", "RUN", "--warmup", "0"], "--warmup must be >= 1, got 0"),
])
def test_refused_in_one_line_before_any_work(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    io.set_quiet(False)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()  # refused before --out was made


@pytest.mark.parametrize("argv", [["ising", "denoise"], ["vae", "train"],
                                  ["evidence", "RUN"], ["ising", "gap"]])
def test_empty_out_is_refused_and_nothing_is_written(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out must name a folder" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_data", [1, 2, 3])
def test_the_pair_plot_of_latents_works_for_one_image(n_data):
    """``mcmc --n-data 1`` crashed after NUTS: the pair plot asked for the second image."""
    import arviz as az
    import numpy as np

    from varbayes.inference.vae.latent_posterior import pair_coords

    z = np.zeros((2, 5, n_data, 2))
    idata = az.from_dict(posterior={"z": z}, dims={"z": ["data", "z_dim"]})
    coords = pair_coords(idata)
    assert coords == {"data": list(range(min(2, n_data)))}
    assert idata.posterior.sel(coords)["z"].sizes["data"] == min(2, n_data)


def _files(tmp_path):
    import numpy as np

    good = tmp_path / "good.npz"
    np.savez(good, horizontal=np.ones((5, 4)), vertical=np.ones((4, 5)))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    empty_npz = tmp_path / "empty.npz"
    empty_npz.write_bytes(b"")
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("horizontal,vertical\n1,2\n")
    one_array = tmp_path / "one.npy"
    np.save(one_array, np.ones((5, 5)))
    empty_npy = tmp_path / "empty.npy"
    np.save(empty_npy, np.zeros((0,)))
    flat_npy = tmp_path / "flat.npy"
    np.save(flat_npy, np.ones(25))
    return {"truncated": truncated, "empty_npz": empty_npz, "not_zip": not_zip,
            "one_array": one_array, "empty_npy": empty_npy, "flat_npy": flat_npy,
            "good": good}


@pytest.mark.parametrize("option, name, needle", [
    ("--coupling", "truncated", "is not a readable .npz file"),
    ("--coupling", "empty_npz", "is not a readable .npz file"),
    ("--coupling", "not_zip", "is not a readable .npz file"),
    ("--coupling", "one_array", "holds one array, not an .npz archive"),
    ("--observed", "empty_npy", "holds an array of shape (0,): pass a non-empty 2-D image"),
    ("--observed", "flat_npy", "holds an array of shape (25,)"),
    ("--observed", "good", "is an .npz archive: pass one 2-D .npy array"),
    ("--image", "empty_npy", "holds an array of shape (0,)"),
])
def test_bad_arrays_and_archives_are_one_line(option, name, needle, tmp_path, capsys):
    io.set_quiet(False)
    f = _files(tmp_path)
    argv = ["ising", "denoise", "--out", str(tmp_path / "out")]
    if option == "--coupling":
        argv += ["--image", str(tmp_path / "img.npy"), "--coupling", str(f[name])]
        import numpy as np

        np.save(tmp_path / "img.npy", np.where(np.eye(5) > 0, 1.0, -1.0))
    else:
        argv += [option, str(f[name])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and option in err[0], err


def _fake_run(folder):
    folder.mkdir()
    (folder / "checkpoint.npz").write_bytes(b"not read: the refusal comes first")
    (folder / "metrics.json").write_text('{"test_elbo": -1.0}')
    return folder


@pytest.mark.parametrize("command", [["vae", "sample"], ["vae", "reconstruct"],
                                     ["vae", "inpaint"], ["evidence"], ["mcmc"], ["compare"]])
def test_out_equal_to_the_run_folder_is_refused(command, tmp_path, capsys):
    """Issue 16, item 2: ``--out RUN`` overwrote the run's metrics.json and figures."""
    run = _fake_run(tmp_path / "run")
    assert main([*command, str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the run folder" in err[0] and "--force" in err[0], err
    assert (run / "metrics.json").read_text() == '{"test_elbo": -1.0}'
    other = _fake_run(tmp_path / "other")  # another training run is protected too
    assert main([*command, str(run), "--out", str(other)]) == 2
    assert "holds a training run (checkpoint.npz)" in capsys.readouterr().err


def test_compare_out_equal_to_a_variant_is_refused_and_force_lets_it_through(tmp_path,
                                                                            capsys):
    run, variant = _fake_run(tmp_path / "run"), _fake_run(tmp_path / "variant")
    assert main(["compare", str(run), "--variants", str(variant), "--out",
                 str(variant)]) == 2
    assert "is the run folder" in capsys.readouterr().err
    # --force passes this check; the fake checkpoint is then refused when it is read
    assert main(["vae", "sample", str(run), "--out", str(run), "--force"]) == 2
    err = capsys.readouterr().err
    assert "is the run folder" not in err and "holds a training run" not in err
