"""Data parallelism on this machine: one SVI step and one evaluation on N = 1 and 2 devices
(JAX) or processes (torch), as ratios, with the communication cost named.

The step is the 784-400-20 VAE's (analytic-KL ELBO, Adam, global batch 128), as ``fit``
takes it; the evaluation is the per-datapoint ELBO of 1,000 points.

- JAX (NumPyro's update, jitted and donated): one process with two forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``); N = 1 and N = 2 interleaved in
  that process. ``jax_allreduce_ms``: the gradient-sized all-reduce alone (a jitted sum
  over the mesh of a (2, P) array split by rows).
- torch (our Pyro step with TorchScript, fused Adam): one process with 2 threads, then two
  gloo processes of one thread each (``torch.distributed.run``), then one process again
  (the two one-process runs bracket the two-process run; their mean is the baseline).
  ``torch_allreduce_ms``: the one flat all-reduce of the gradients per step.

``*_n2_over_n1`` is the per-global-step cost of N = 2 over N = 1: the target is <= 1.3 on
this 2-core machine, where no speed-up is possible (both devices share the same cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

X_DIM, HIDDEN, Z_DIM, BATCH, N_EVAL = 784, 400, 20, 128, 1000
QUICK = {"hidden": 16, "z": 2, "steps": 3, "repeats": 3}
FULL = {"hidden": HIDDEN, "z": Z_DIM, "steps": 20, "repeats": 7}


def _sizes(quick: bool) -> dict[str, int]:
    return QUICK if quick else FULL


def _data(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, X_DIM)) < 0.13).astype(np.float32)


# --------------------------------------------------------------------------- JAX side

def _jax(quick: bool) -> dict[str, float]:
    import functools

    import jax
    import jax.numpy as jnp

    from benchmarks._timing import interleaved_medians
    from varbayes.inference import sharding
    from varbayes.inference.vi.svi import SVIOptions, numpyro_svi
    from varbayes.models.vae import numpyro_model as mod
    from varbayes.models.vae.config import VAEConfig

    size = _sizes(quick)
    vae = mod.build(VAEConfig(x_dim=X_DIM, z_dim=size["z"], hidden=(size["hidden"],)), seed=0)
    model = functools.partial(mod.model, vae, n_data=60_000)
    guide = functools.partial(mod.guide, vae, n_data=60_000)
    svi = numpyro_svi(model, guide, SVIOptions(elbo="meanfield"))
    x, x_eval = _data(BATCH, 0), _data(N_EVAL, 1)
    mesh = sharding.mesh(2)
    update = jax.jit(svi.update, donate_argnums=0)
    eval_loss = jax.jit(lambda p, k, xb: svi.loss.loss(
        k, p, functools.partial(mod.model, vae), functools.partial(mod.guide, vae), xb))
    state0 = svi.init(jax.random.PRNGKey(0), jnp.asarray(x))
    states = {1: jax.tree_util.tree_map(jnp.copy, state0),
              2: sharding.replicate(jax.tree_util.tree_map(jnp.copy, state0), mesh)}
    batches = {1: jnp.asarray(x), 2: sharding.shard_rows([x], mesh)[0]}
    evals = {1: jnp.asarray(x_eval), 2: sharding.shard_rows([x_eval], mesh)[0]}
    key = jax.random.PRNGKey(1)

    def steps(n: int):
        def run() -> None:
            loss = None
            for _ in range(size["steps"]):
                states[n], loss = update(states[n], batches[n])
            loss.block_until_ready()
        return run

    def evaluate(n: int):  # the params of now: the steps donate (delete) older ones
        return lambda: eval_loss(svi.get_params(states[n]), key, evals[n]).block_until_ready()

    n_params = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(svi.get_params(state0)))
    grads = sharding.shard_rows([np.ones((2, n_params), np.float32)], mesh)[0]
    reduce = jax.jit(lambda g: g.sum(0), out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    t = interleaved_medians({"step_n1": steps(1), "step_n2": steps(2),
                             "eval_n1": evaluate(1), "eval_n2": evaluate(2),
                             "allreduce": lambda: reduce(grads).block_until_ready()},
                            repeats=size["repeats"])
    per = 1e3 / size["steps"]
    return {"jax_step_n1_ms": t["step_n1"] * per, "jax_step_n2_ms": t["step_n2"] * per,
            "jax_step_n2_over_n1": t["step_n2"] / t["step_n1"],
            "jax_eval_n1_ms": t["eval_n1"] * 1e3, "jax_eval_n2_ms": t["eval_n2"] * 1e3,
            "jax_eval_n2_over_n1": t["eval_n2"] / t["eval_n1"],
            "jax_allreduce_ms": t["allreduce"] * 1e3, "n_params": n_params}


# ------------------------------------------------------------------------- torch side

def _torch(quick: bool) -> dict[str, float]:
    """One process's (or, under torchrun, every rank's) step and evaluation timings."""
    import functools
    import statistics

    import pyro
    import torch

    from varbayes.inference import ranks
    from varbayes.inference.vi import data_parallel
    from varbayes.inference.vi.svi import (
        SVIOptions,
        pyro_elbo,
        pyro_loss,
        pyro_optimizer,
        pyro_step,
    )
    from varbayes.models.vae import pyro_model as mod
    from varbayes.models.vae.config import VAEConfig

    ranks.init_from_env()
    world, rank = ranks.world(), ranks.rank()
    size = _sizes(quick)
    vae = mod.build(VAEConfig(x_dim=X_DIM, z_dim=size["z"], hidden=(size["hidden"],)), seed=0)
    m = BATCH // world
    model = functools.partial(mod.model, vae, n_data=60_000)
    guide = functools.partial(mod.guide, vae, n_data=60_000)
    if world > 1:
        model = data_parallel.rank_draws(model, 60_000, m, rank, world, warn=False)
        guide = data_parallel.rank_draws(guide, 60_000, m, rank, world)
    x = torch.from_numpy(_data(BATCH, 0)[rank * m:(rank + 1) * m])
    x_eval = torch.from_numpy(_data(N_EVAL, 1)).chunk(world)[rank]
    options = SVIOptions(backend="pyro", elbo="meanfield")
    pyro.clear_param_store()
    with pyro.validation_enabled(False):
        pyro.poutine.trace(guide).get_trace(x)
        pyro.poutine.trace(model).get_trace(x)
        named = dict(pyro.get_param_store().named_parameters())
        params = [named[k] for k in sorted(named)]
        optimizer = pyro_optimizer(options, params)
        loss = pyro_loss(options, model, guide, params, "torchscript")
        reduce = (functools.partial(data_parallel.average_gradients, params) if world > 1
                  else None)
        step = pyro_step(loss, optimizer, reduce)
        elbo = pyro_elbo(options, jit=False)
        eval_model = functools.partial(mod.model, vae)
        eval_guide = functools.partial(mod.guide, vae)
        flat = torch.zeros(sum(p.numel() for p in params) + 2)

        def timed(fn) -> float:
            times = []
            for i in range(size["repeats"] + 1):
                t0 = time.perf_counter()
                fn()
                if i:  # the first is warm-up
                    times.append(time.perf_counter() - t0)
            return statistics.median(times)

        def steps() -> None:
            for _ in range(size["steps"]):
                step(x)

        def evaluate() -> None:
            ranks.all_sum(torch.tensor([elbo.loss(eval_model, eval_guide, x_eval)]))

        t_step, t_eval = timed(steps), timed(evaluate)
        t_reduce = timed(lambda: ranks.all_sum(flat)) if world > 1 else 0.0
    return {"step_ms": t_step * 1e3 / size["steps"], "eval_ms": t_eval * 1e3,
            "allreduce_ms": t_reduce * 1e3, "world": world}


def _subprocess(args: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    line = next(ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{"))
    return json.loads(line)


def run(quick: bool = False) -> dict[str, float]:
    """Every metric of the module docstring, measured in subprocesses of this one."""
    me = [sys.executable, "-m", "benchmarks.scaling"] + (["--quick"] if quick else [])
    base = {"JAX_PLATFORMS": "cpu", "OMP_WAIT_POLICY": "PASSIVE"}
    out = _subprocess([*me, "jax"], {**base, "XLA_FLAGS":
                                     "--xla_force_host_platform_device_count=2"})
    cores = str(os.cpu_count() or 1)
    one_a = _subprocess([*me, "torch"], {**base, "OMP_NUM_THREADS": cores})
    two = _subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=2", "-m", "benchmarks.scaling",
                       *(["--quick"] if quick else []), "torch"],
                      {**base, "OMP_NUM_THREADS": str(max(1, int(cores) // 2))})
    one_b = _subprocess([*me, "torch"], {**base, "OMP_NUM_THREADS": cores})
    step1 = (one_a["step_ms"] + one_b["step_ms"]) / 2
    eval1 = (one_a["eval_ms"] + one_b["eval_ms"]) / 2
    out.update({"torch_step_n1_ms": step1, "torch_step_n2_ms": two["step_ms"],
                "torch_step_n2_over_n1": two["step_ms"] / step1,
                "torch_eval_n1_ms": eval1, "torch_eval_n2_ms": two["eval_ms"],
                "torch_eval_n2_over_n1": two["eval_ms"] / eval1,
                "torch_allreduce_ms": two["allreduce_ms"],
                "torch_allreduce_share": two["allreduce_ms"] / two["step_ms"]})
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    side = sys.argv[-1]
    result = _jax(quick) if side == "jax" else _torch(quick)
    from varbayes.inference import ranks

    if ranks.is_main():
        print(json.dumps(result))
    if ranks.launched():
        ranks.leave_and_exit(0)
