"""Issue 16: counts bounded by memory and 32-bit counters, compare on one dataset, edge sizes.

Counts of 10^12 gave an OverflowError, a 7 TiB allocation or RESOURCE_EXHAUSTED after work
had started; each is now one line and exit 2 before any work, naming the option, the memory
needed and available, and the largest value that fits. ``compare --variants`` refuses runs
on other data. ``mcmc`` and ``compare`` with one image, one chain and one draw write their
metrics.json.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from varbayes.inference import io
from varbayes.inference.cli import main
from varbayes.inference.commands import _limits
from varbayes.models.errors import VarbayesError

BIG = str(10**12)
GIB = 2**30


def refused(argv, tmp_path, capsys) -> str:
    """Run ``argv --out tmp/out``: exit 2, one line on stderr, --out not made; the line."""
    io.set_quiet(False)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not out.exists()  # refused before --out was made
    return err[0]


# ------------------------------------------------------------------ the limits themselves

@pytest.fixture
def memory(monkeypatch):
    """Pretend 21.3 GiB of memory is available."""
    avail = int(21.3 * GIB)
    monkeypatch.setattr(_limits, "available_memory", lambda: avail)
    return avail


def test_the_refusal_names_option_need_memory_and_the_largest_value(memory):
    with pytest.raises(VarbayesError) as e:
        _limits.check_fits("--n", 10**12, 3136, "the samples")
    assert str(e.value) == ("--n 1000000000000 needs 2.8 PiB for the samples, more than the "
                            "21.3 GiB of memory available: pass --n at most 7200000")
    largest = 7_200_000  # the value it names fits
    _limits.check_fits("--n", largest, 3136, "the samples")
    assert largest * 3136 <= memory < (memory // 3136 + 1) * 3136


def test_a_product_names_its_largest_count_and_a_counter_its_limit(memory):
    with pytest.raises(VarbayesError, match=r"^--chains 1000000 needs .* \(with --samples 500, "
                                            r"--n-data 4\), .*: pass --chains at most "):
        _limits.check_product_fits({"--chains": 10**6, "--samples": 500, "--n-data": 4}, 3000,
                                   "the draws")
    _limits.check_product_fits({"--chains": 4, "--samples": 500, "--n-data": 4}, 3000, "x")
    with pytest.raises(VarbayesError) as e:
        _limits.check_counter({"--warmup": 10**12, "--samples": 500}, "NUTS's step counter")
    assert str(e.value) == ("--warmup 1000000000000 is more than NUTS's step counter can "
                            "count: --warmup + --samples must be at most 2147483647 (with "
                            "--samples 500); pass --warmup at most 2147483147")
    _limits.check_counter({"--warmup": 2**31 - 501, "--samples": 500}, "NUTS")


def test_a_counters_limit_caps_the_largest_value_memory_allows(monkeypatch):
    monkeypatch.setattr(_limits, "available_memory", lambda: 2**40)
    with pytest.raises(VarbayesError, match=r"pass --iters at most 2100000000$"):
        _limits.check_sum_fits({"--iters": 10**12, "--burn-in": 50}, 64, "sweeps",
                               cap=_limits.INT32_MAX)


def test_unknown_memory_refuses_nothing_and_bytes_read_well(monkeypatch):
    assert _limits.available_memory() > 2**20  # this Linux machine's /proc/meminfo
    monkeypatch.setattr(_limits, "available_memory", lambda: None)
    _limits.check_fits("--n", 10**30, 10**9, "anything")
    assert [_limits.format_bytes(n) for n in (512, 1536, 3 * 2**40, 10**40)] == [
        "512 B", "1.5 KiB", "3.0 TiB", "8.6e21 EiB"]
    assert [_limits.round_down(n) for n in (7, 99, 7312, 1999999)] == [7, 99, 7300, 1900000]


def test_normal_counts_pass_every_check(memory):
    """The defaults and ordinary values stay far below the bounds (MNIST-sized images)."""
    from varbayes.inference.commands import ising, vae
    from varbayes.inference.ising.denoise import Options

    for method in ("gibbs", "svi", "svi-score", "cavi", "icm"):
        ising.check_counts([method], Options(iters=5000, chains=16, particles=64), (128, 128))
    _limits.check_latent_draws_fit(4, 2000, 100, 784, warmup=1000, runs=3)
    _limits.check_nuts_steps(10**6, 10**6)
    vae.check_network_fits((500, 500), 50)
    _limits.check_fits("--n", 10_000, vae.SAMPLE_BYTES_PER_PIXEL * 784, "samples")
    _limits.check_fits("--k", 5000, vae.INPAINT_BYTES_PER_PIXEL * 100 * 784, "IS")


# ------------------------------------------------------------ refusals needing no run

@pytest.fixture
def observed(tmp_path):
    path = tmp_path / "obs.npy"
    np.save(path, np.random.default_rng(0).normal(size=(8, 8)))
    return str(path)


@pytest.mark.parametrize("argv, needle", [
    (["ising", "denoise", "--method", "gibbs", "--iters", BIG],
     "--iters 1000000000000 needs 58.2 TiB for the per-sweep trace and its plot (with "
     "--burn-in 50)"),
    (["ising", "denoise", "--method", "gibbs", "--burn-in", BIG], "--burn-in 1000000000000 "),
    (["ising", "denoise", "--method", "gibbs", "--chains", BIG],
     "--chains 1000000000000 needs 931.3 TiB for the chains' spins and running means (on a "
     "8x8 grid)"),
    (["ising", "denoise", "--method", "gibbs", "--burn-in", "-1"], "--burn-in must be >= 0"),
    (["ising", "denoise", "--method", "svi", "--iters", BIG], "--iters 1000000000000 needs"),
    (["ising", "denoise", "--method", "svi-score", "--particles", BIG],
     "--particles 1000000000000 needs 931.3 TiB for the particles' spins and score terms"),
    (["ising", "compare", "--iters", BIG], "--iters 1000000000000 needs"),
])
def test_ising_counts_are_refused(argv, needle, observed, tmp_path, capsys):
    line = refused([*argv, "--observed", observed], tmp_path, capsys)
    assert needle in line, line
    if "needs" in needle:
        assert "of memory available: pass " in line and " at most " in line, line


@pytest.mark.parametrize("argv, needle", [
    (["ising", "gap", "--points", BIG],
     "--points 1000000000000 needs 232.8 TiB for the gaps, gap.csv and the curves, more than "
     "the "),
    (["vae", "train", "--hidden", BIG], "--hidden 1000000000000 needs 465.7 TiB for the "
                                        "network's weights, gradients and Adam moments"),
    (["vae", "train", "--hidden", "20", "--latent", BIG],
     "--latent 1000000000000 needs 873.1 TiB for the network's weights"),
])
def test_counts_refused_before_reading_data(argv, needle, tmp_path, capsys):
    line = refused(argv, tmp_path, capsys)
    assert needle in line and "at most" in line, line


def test_the_ising_counter_is_named_where_memory_would_allow(monkeypatch, observed, tmp_path,
                                                             capsys):
    monkeypatch.setattr(_limits, "available_memory", lambda: 2**50)
    line = refused(["ising", "denoise", "--method", "svi", "--iters", BIG, "--observed",
                    observed], tmp_path, capsys)
    assert line.endswith("--iters 1000000000000 is more than NumPyro SVI's 32-bit step "
                         "counter can count: pass --iters at most 2147483647"), line


# --------------------------------------------------------- the edges of compare and mcmc

@pytest.mark.slow
def test_the_gate_fails_when_rhat_or_ess_is_undefined():
    """One chain has no r̂ and one draw no ESS (NaN): the gate passed on nothing."""
    import arviz as az

    from varbayes.inference.workflow.diagnostics import gate

    rng = np.random.default_rng(0)
    for shape in ((1, 1000, 2), (2, 1, 2)):
        g = gate(az.from_dict(posterior={"z": rng.normal(size=shape)}))
        assert not g.passed and g.failing == ("z",), (shape, g)
    assert gate(az.from_dict(posterior={"z": rng.normal(size=(4, 1000, 2))})).passed


def test_model_comparison_of_one_draw_is_a_note_not_a_crash():
    """arviz's PSIS-LOO raised IndexError on one draw, after all the NUTS work."""
    import arviz as az

    from varbayes.inference.workflow.report import model_comparison

    one = az.from_dict(posterior={"z": np.zeros((1, 1, 3))},
                       log_likelihood={"x": np.full((1, 1, 3), -2.0)})
    text, metrics = model_comparison({"a": one, "b": one})
    assert "Not computed: PSIS-LOO needs at least 2 posterior draws per model, got 1" in text
    assert set(metrics) == {"loo_a", "waic_a", "loo_b", "waic_b"}
    assert all(math.isnan(v) for v in metrics.values())


def test_the_k_hat_of_q_is_nan_below_ten_draws():
    """q_khat refused fewer than 10 draws: --chains 1 --samples 5 crashed after NUTS."""
    from varbayes.inference.vae.latent_posterior import _q_check

    few = _q_check(np.zeros((9, 3)))
    assert np.isnan(few.khat).all() and few.khat.shape == (3,) and few.n_draws == 9
    assert "needs at least 10 draws of q, got 9" in few.verdict
    assert np.isfinite(_q_check(np.random.default_rng(0).normal(size=(100, 3))).khat).all()


TINY = ["--epochs", "1", "--latent", "2", "--hidden", "8", "--n-train", "100", "--n-test",
        "6", "--batch-size", "50", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny digits runs: the run, a variant (another seed), one binarized statically, and one
    conditioned on the observed half (for inpaint)."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in (("run", []), ("variant", ["--seed", "1"]),
                        ("static", ["--binarize", "static"]),
                        ("observed", ["--conditional", "observed"])):
        made[name] = root / name
        assert main(["vae", "train", *TINY, *extra, "--out", str(made[name])]) == 0
    return made


@pytest.mark.slow
@pytest.mark.parametrize("argv, needle", [
    (["vae", "sample", "{run}", "--n", BIG],
     "--n 1000000000000 needs 3.6 PiB for the decoded images and their picture grid, more "
     "than the "),
    (["vae", "inpaint", "{observed}", "--k", BIG],
     "--k 1000000000000 needs 5.5 PiB for the per-pixel log-likelihoods of the importance "
     "samples (with 6 test images of 64 pixels, --n-eval 1000)"),
    (["mcmc", "{run}", "--samples", BIG],
     "--samples 1000000000000 needs 10.9 PiB for the posterior predictive images and "
     "pointwise log-likelihoods (with --chains 4, --n-data 4)"),
    (["mcmc", "{run}", "--chains", BIG], "--chains 1000000000000 needs "),
    (["mcmc", "{run}", "--n-data", BIG, "--samples", str(10**9)],
     "--samples 1000000000 needs 16.8 TiB for the posterior predictive images and pointwise "
     "log-likelihoods (with --chains 4, --n-data 6)"),
    (["mcmc", "{run}", "--warmup", BIG],
     "--warmup 1000000000000 is more than NUTS's 32-bit step counter can count: --warmup + "
     "--samples must be at most 2147483647 (with --samples 500); pass --warmup at most "
     "2147483147"),
    (["compare", "{run}", "--samples", BIG],
     "--samples 1000000000000 needs 8.2 PiB for the posterior predictive images and "
     "pointwise log-likelihoods (with --chains 2, --n-data 6)"),
    (["compare", "{run}", "--variants", "{variant}", "--chains", BIG],
     "--chains 1000000000000 needs 2.7 EiB for the posterior predictive images and pointwise "
     "log-likelihoods of 2 runs (with --samples 500, --n-data 6)"),
    (["evidence", "{run}", "--k", BIG],
     "--k 1000000000000 needs 109.1 TiB for the importance log weights of a batch (with "
     "--batch-size 6)"),
    (["evidence", "{run}", "--estimators", "ais", "--ais-chains", BIG],
     "--ais-chains 1000000000000 needs 4.3 PiB for AIS's per-step acceptances and step sizes"),
    (["evidence", "{run}", "--estimators", "hmc", "--hmc-samples", BIG],
     "--hmc-samples 1000000000000 needs 50.9 TiB for the HMC draws of a batch"),
])
def test_counts_of_a_run_are_refused_before_any_work(argv, needle, runs, tmp_path, capsys):
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in argv]
    line = refused(argv, tmp_path, capsys)
    assert needle in line, line
    if " needs " in needle:
        assert " of memory available: pass " in line and " at most " in line, line


@pytest.mark.slow
def test_counts_the_data_caps_are_not_refused(runs, tmp_path, monkeypatch):
    """--batch-size and --n-data beyond the 6 test points are capped, not refused."""
    def stop(*args, **kwargs):
        raise VarbayesError("stopped after the checks")

    monkeypatch.setattr("varbayes.inference.commands.evidence.write_evidence", stop)
    assert main(["evidence", str(runs["run"]), "--batch-size", BIG, "--n-data", BIG,
                 "--out", str(tmp_path / "out")]) == 2
    assert (tmp_path / "out").is_dir()  # the checks passed: the estimators were next


@pytest.mark.slow
def test_compare_refuses_variants_binarized_otherwise(runs, tmp_path, capsys):
    line = refused(["compare", str(runs["run"]), "--variants",
                    f"{runs['variant']},{runs['static']}"], tmp_path, capsys)
    assert line == (f"varbayes compare: error: --variants {runs['static']} was trained on "
                    f"--binarize static but {runs['run']} on --binarize dynamic: variants are "
                    "compared by their log-likelihood of the same test images, so pass runs "
                    "trained on the same dataset, image size and binarization")


@pytest.mark.slow
def test_compare_refuses_variants_on_another_dataset(runs, tmp_path, capsys, shared_data):
    mnist = tmp_path / "mnist"
    assert main(["vae", "train", "--dataset", "mnist", *TINY, "--out", str(mnist)]) == 0
    line = refused(["compare", str(runs["run"]), "--variants", str(mnist)], tmp_path, capsys)
    assert (f"--variants {mnist} was trained on dataset mnist, 784 pixels but {runs['run']} "
            "on dataset digits, 64 pixels: ") in line, line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["mcmc", "compare"])
def test_one_image_one_chain_one_draw_writes_metrics(command, runs, tmp_path):
    """--n-data 1 --chains 1 --samples 1: the k̂ of q (< 10 draws) and PSIS-LOO (one draw)
    crashed after NUTS; now they are NaN with a note, the gate fails, metrics.json is there."""
    out = tmp_path / "out"
    extra = (["--variants", str(runs["variant"]), "--ising-couplings", ""]
             if command == "compare" else [])
    assert main([command, str(runs["run"]), *extra, "--n-data", "1", "--chains", "1",
                 "--warmup", "5", "--samples", "1", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    key = "latent_" if command == "compare" else ""
    assert m[f"{key}n_data"] == 1 and m[f"{key}gate_passed"] is False
    assert m[f"{key}khat_q_amortized_max"] is None  # NaN
    if command == "compare":
        assert m["loo_run"] is None and m["loo_variant"] is None
        assert "Not computed: PSIS-LOO needs at least 2" in (out / "report.md").read_text()


@pytest.mark.slow
def test_compare_on_the_whole_test_set_with_few_draws(runs, tmp_path):
    """--n-data beyond the test set (6 images) and 2 x 2 draws: LOO runs, k̂ is NaN."""
    out = tmp_path / "out"
    assert main(["compare", str(runs["run"]), "--variants", str(runs["variant"]),
                 "--ising-couplings", "", "--n-data", "50", "--chains", "2", "--warmup", "5",
                 "--samples", "2", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["latent_n_data"] == 6 and math.isfinite(m["loo_run"])
    assert math.isfinite(m["loo_variant"]) and m["latent_khat_q_amortized_max"] is None
