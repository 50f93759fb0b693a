"""Evidence estimators with their datapoints split over JAX devices or torch ranks.

This process sees one JAX device and must keep it: the multi-device checks run
``sharded_helper.py`` in subprocesses with ``XLA_FLAGS`` forcing 2 host devices, and the
torch-rank checks run it under ``torch.distributed.run`` with 2 gloo processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference import ranks
from varbayes.inference.evidence import parallel
from varbayes.models.errors import VarbayesError

HELPER = Path(__file__).with_name("sharded_helper.py")
TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1", **extra}
    if "XLA_FLAGS" not in extra:
        env.pop("XLA_FLAGS", None)
    return env


# ------------------------------------------------------------------ in this process

def _batches(sizes, backend="numpyro"):
    """Batches ``((static, x), {})`` whose x rows hold their global index."""
    from varbayes.inference.evidence.batches import batches

    x = np.arange(sum(sizes), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    out, lo = [], 0
    for m in sizes:
        out += batches((x[lo:lo + m],), m, backend=backend, static=("net",))
        lo += m
    return out


def _as_rank(monkeypatch, r: int, world: int) -> None:
    monkeypatch.setattr(ranks, "world", lambda: world)
    monkeypatch.setattr(ranks, "rank", lambda: r)


def test_block_sizes_split_a_batch_evenly():
    assert parallel.block_sizes(8, 2) == [4, 4]
    assert parallel.block_sizes(5, 2) == [3, 2]
    assert parallel.block_sizes(2, 3) == [1, 1, 0]
    assert sum(parallel.block_sizes(101, 7)) == 101


def test_ranks_take_contiguous_blocks_and_gather_them_in_the_original_order(monkeypatch):
    """Batches of 8, 8 and 4 over 3 ranks: each rank's rows of every batch, gathered by
    ``gather_rows`` rank after rank, come back as 0..19."""
    import torch

    sizes = [8, 8, 4]
    world = 3
    local = []
    for r in range(world):
        _as_rank(monkeypatch, r, world)
        rows = [np.asarray(parallel.local_batch(b)[0][1])[:, 0] for b in _batches(sizes)]
        assert all(np.all(np.diff(v) == 1) for v in rows if len(v))  # contiguous blocks
        assert [b[0][0] for b in map(parallel.local_batch, _batches(sizes))] == ["net"] * 3
        local.append(np.concatenate(rows))
    _as_rank(monkeypatch, 1, world)
    got = {}
    monkeypatch.setattr(ranks, "gather_rows", lambda t, counts: got.update(counts=counts)
                        or torch.as_tensor(np.concatenate(local)))
    out = parallel.gather_points(local[1], sizes)
    assert got["counts"] == [len(v) for v in local] == [8, 7, 5]
    np.testing.assert_array_equal(out, np.arange(20.0))


def test_one_process_is_left_alone():
    batch = _batches([5])[0]
    assert parallel.local_batch(batch)[0][1].shape == (5, 3)
    assert parallel.rank_seed(7) == 7
    local = np.arange(5.0)
    assert parallel.gather_points(local, [5]) is local
    assert parallel.place(batch, None) == (batch, ())


def test_refusals_are_one_line():
    with pytest.raises(VarbayesError, match="XLA_FLAGS=--xla_force_host_platform_device"):
        parallel.resolve_devices(2, True, "data")  # this process sees one device
    with pytest.raises(VarbayesError, match=r"use --nproc 2 \(torch.distributed\)"):
        parallel.resolve_devices(2, False, "data")
    with pytest.raises(VarbayesError, match="plate=None"):
        parallel.resolve_devices(2, True, None)
    with pytest.raises(VarbayesError, match="devices must be an integer >= 1"):
        parallel.resolve_devices(0, True, "data")
    with pytest.raises(VarbayesError, match="devices must be an integer >= 1, got None"):
        parallel.resolve_devices(None, True, "data")  # no default in force: an argument
    with pytest.raises(VarbayesError, match="the batch size 7 does not divide by --devices 2: "
                                            "use 6 or 8"):
        parallel.data_mesh(_batches([8, 7, 3]), 2)  # every batch but the last must divide
    assert parallel.data_mesh(_batches([8]), 1) is None


@pytest.mark.slow
def test_devices_is_an_argument_of_the_estimators():
    from varbayes.inference.evidence.importance import importance_sampling
    from varbayes.models.ppca import numpyro_model as m
    from varbayes.models.ppca import random_ppca, simulate

    p = random_ppca(D=3, K=1, sigma=0.5)
    x, _ = simulate(p, 4)
    assert importance_sampling(m.model, m.guide, [((p, x), {})], 4).log_px.shape == (4,)
    with pytest.raises(VarbayesError, match="JAX sees 1"):
        importance_sampling(m.model, m.guide, [((p, x), {})], 4, devices=2)


# ------------------------------------------------------------------ JAX devices

@pytest.mark.slow
def test_two_devices_give_the_one_device_results_point_by_point(tmp_path):
    """IS (K = 64) and the ELBO of a tiny VAE and AIS of PPCA: the same per-datapoint
    results on 2 forced host devices as on one, with batches of 8, 8 and a short 5."""
    done = subprocess.run([sys.executable, str(HELPER), "jax", str(tmp_path)],
                          env=_env(XLA_FLAGS=TWO_DEVICES), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads((tmp_path / "jax.json").read_text())
    assert got["x_devices"] == [2, 2, 1]  # split, except the short last batch
    assert got["weights_devices"] == [2]  # the network's arrays on both devices
    one, two = got["1"], got["2"]
    for key in one:
        a, b = np.asarray(one[key]), np.asarray(two[key])
        assert a.shape == b.shape and np.all(np.isfinite(a)), key
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)
    assert len(one["is"]) == 21 and np.ptp(one["is"]) > 1  # points differ: order matters
    assert np.asarray(one["ais_log_w"]).shape == (3, 16)


# ------------------------------------------------------------------ torch ranks

def _ranked(tmp_path: Path, nproc: int) -> list[dict]:
    out = tmp_path / f"n{nproc}"
    out.mkdir()
    cmd = [sys.executable, str(HELPER), "ranks", str(out)]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.mark.slow
def test_two_torch_ranks_gather_every_datapoint_in_order(tmp_path):
    """Pyro PPCA over 2 gloo ranks: with the exact posterior as guide every log weight is
    log p(x_i), so IS, the ELBO and AIS must match one process point by point; with a wide
    guide each rank draws its own stream, so they match statistically."""
    (one,) = _ranked(tmp_path, 1)
    r0, r1 = _ranked(tmp_path, 2)
    assert (one["world"], r0["world"], r0["rank"], r1["rank"]) == (1, 2, 0, 1)
    exact = np.asarray(one["exact"])
    assert exact.shape == (21,) and np.ptp(exact) > 1  # a misordered point shows
    for key in ("is", "elbo", "ais"):
        np.testing.assert_allclose(r0[key], one[key], atol=1e-3, err_msg=key)
        np.testing.assert_allclose(r0[key], exact, atol=2e-3, err_msg=key)
    np.testing.assert_allclose(r0["ess"], 16, rtol=1e-3)
    assert np.asarray(r0["ais_log_w"]).shape == (2, 21)
    for key in r0:  # every rank returns all the results
        if key != "rank":
            np.testing.assert_array_equal(r1[key], r0[key], err_msg=key)
    z = (np.subtract(r0["wide_elbo"], one["wide_elbo"])
         / np.hypot(r0["wide_elbo_stderr"], one["wide_elbo_stderr"]))
    assert np.all(np.abs(z) < 5), z
    for res in (one, r0):
        assert abs(np.mean(res["wide_is"]) - exact.mean()) < 0.05
        assert np.all(np.isfinite(res["wide_is_k10"])) and len(res["wide_is_k10"]) == 21


# ------------------------------------------------------------------ the CLI

TINY = ["--n-train", "200", "--n-test", "40", "--hidden", "16", "--batch-size", "50",
        "--latent", "2", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from varbayes.inference.cli import main

    root = tmp_path_factory.mktemp("sharded")
    for backend in ("numpyro", "pyro"):
        assert main(["vae", "train", "--backend", backend, "--out", str(root / backend),
                     *TINY]) == 0
    return {b: root / b for b in ("numpyro", "pyro")}


def _evidence(run: Path, out: Path, *argv: str, xla_flags: str | None = None
              ) -> subprocess.CompletedProcess:
    env = _env(**({"XLA_FLAGS": xla_flags} if xla_flags else {}))
    return subprocess.run([sys.executable, "-m", "varbayes", "evidence", str(run), "--out",
                           str(out), "--quiet", *argv], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("backend, argv, flags, needle", [
    ("numpyro", ["--devices", "2"], None,
     "--devices 2 but JAX sees 1 cpu device(s): pass --devices 1 or fewer, or on a CPU, "
     "start it with XLA_FLAGS=--xla_force_host_platform_device_count=2"),
    ("numpyro", ["--devices", "2", "--batch-size", "7"], TWO_DEVICES,
     "--batch-size 7 does not divide by --devices 2: use 6 or 8"),
    ("pyro", ["--devices", "2"], TWO_DEVICES,
     "use --nproc 2 (torch.distributed) for a Pyro run"),
], ids=["too-many-devices", "batch-does-not-divide", "devices-on-pyro"])
def test_cli_refuses_in_one_line(runs, backend, argv, flags, needle, tmp_path):
    done = _evidence(runs[backend], tmp_path / "ev", *argv, xla_flags=flags)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert needle in lines[0]
    assert not (tmp_path / "ev" / "metrics.json").exists()


@pytest.mark.slow
def test_write_evidence_passes_devices_on_and_writes_only_on_the_main_process(
        runs, tmp_path, monkeypatch):
    from varbayes.inference.vae.bayes_evidence import write_evidence
    from varbayes.inference.vae.run import load_run

    run = load_run(runs["numpyro"])
    with pytest.raises(VarbayesError, match="JAX sees 1"):  # reaches the estimators
        write_evidence(run, tmp_path / "two", ["elbo", "is"], n_data=4, k=4, devices=2)
    monkeypatch.setattr(ranks, "is_main", lambda: False)
    out = tmp_path / "other"
    out.mkdir()
    ev, m = write_evidence(run, out, ["elbo", "is", "ais"], n_data=4, k=4, ais_steps=(2,))
    assert (m["devices"], m["nproc"], m["n_data"]) == (1, 1, 4) and len(ev.predictive) == 4
    assert not any(out.iterdir())  # computed, but nothing written


@pytest.mark.slow
def test_cli_devices_give_the_same_metrics_and_record_them(runs, tmp_path):
    out = {}
    for d in ("1", "2"):
        done = _evidence(runs["numpyro"], tmp_path / d, "--devices", d, "--k", "64",
                         "--n-data", "21", "--batch-size", "10", "--estimators", "elbo,is",
                         xla_flags=TWO_DEVICES)
        assert done.returncode == 0, done.stderr[-2000:]
        out[d] = json.loads((tmp_path / d / "metrics.json").read_text())
    assert (out["1"]["devices"], out["2"]["devices"], out["2"]["nproc"]) == (1, 2, 1)
    for key in ("elbo", "is", "is_k10", "is_ess_mean", "elbo_stderr", "is_khat_max"):
        assert out["2"][key] == pytest.approx(out["1"][key], rel=1e-5), key
