r"""Benchmarks of linear neural ODEs: adjoints of the depth solve, and the two flows.

    python benchmarks/bench_neural_ode.py [--quick]

1. **Adjoints.** The gradient of $g(c) = \langle G, \varphi(c)\rangle$ through the depth solve
   $R' = A(s)R$ of a [`models.LinearNeuralODE`][] ($n = 8, 16$, degree 4), with `Tsit5`
   and a fixed number of depth steps $N = 16, 64, 256$, for each adjoint:
   `RecursiveCheckpointAdjoint()` (default, $O(\log N)$ checkpoints),
   `RecursiveCheckpointAdjoint(checkpoints=N)` (a checkpoint at every step: plain
   backpropagation, memory $O(N)$), `DirectAdjoint()` and `BacksolveAdjoint()`. Time per
   gradient (median, after compilation) and peak memory: the temporary-buffer size of
   the compiled gradient (`compiled.memory_analysis().temp_size_in_bytes`, XLA's exact
   buffer assignment, so independent of allocator noise); plus the largest relative
   difference of each gradient from `DirectAdjoint`'s. `--quick`: $n = 8$, $N = 16, 256$.
2. **Flows.** Relaxed-balanced init (degree 10, $\lambda = 0.5$) on low-rank regression,
   $t_1 = 2$, rtol = atol = 1e-10 for both flows: the maximum relative deviation
   $\max_t\|\varphi(\theta(t)) - z(t)\|/\max_t\|z\|$ between the Euclidean (Galerkin) flow on
   the coefficients and the intrinsic flow with the log-mean metric, and the wall time of
   each (first call including compilation, then a second call). $n = 4, 8$;
   `--quick`: $n = 4$.
3. **Convergence in the basis** (not in `--quick`). $n = 3$, degrees $p = 2, 4, \dots, 10$:
   the maximum deviation between the flows against the basis size $p + 1$, with the
   observed order of a log–log fit over consecutive sizes (the convergence is
   geometric, so the order grows).
"""

import functools as ft
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import flows
import manifolds
import models
from benchmarks._common import (
    Row,
    fmt_bytes,
    fmt_seconds,
    run_benches,
    say,
    script_main,
    time_call,
)

jax.config.update("jax_enable_x64", True)


def _adjoints(steps):
    return {
        "RecursiveCheckpoint": dfx.RecursiveCheckpointAdjoint(),
        "RecursiveCheckpoint(every step)": dfx.RecursiveCheckpointAdjoint(checkpoints=steps),
        "Direct": dfx.DirectAdjoint(),
        "Backsolve": dfx.BacksolveAdjoint(),
    }


def bench_adjoints(quick):
    widths = (8,) if quick else (8, 16)
    step_counts = (16, 256) if quick else (16, 64, 256)
    rows = []
    say("adjoint                          n  steps   time/grad   temp memory   rel. diff vs Direct")
    for n in widths:
        G = jax.random.normal(jax.random.key(1), (n, n))
        coeffs = models.LinearNeuralODE.random(jax.random.key(0), n, 4).coeffs
        for steps in step_counts:
            grads, results = {}, {}
            for name, adjoint in _adjoints(steps).items():
                model = models.LinearNeuralODE(coeffs, adjoint=adjoint, num_steps=steps)

                def g(c, model=model, G=G):
                    return jnp.sum(G * eqx.tree_at(lambda m: m.coeffs, model, c).lift())

                compiled = jax.jit(jax.grad(g)).lower(coeffs).compile()
                memory = compiled.memory_analysis().temp_size_in_bytes
                grads[name] = compiled(coeffs)
                run = ft.partial(compiled, coeffs)
                results[name] = (time_call(run, repeats=3, min_run_s=0.02), memory)
            ref = grads["Direct"]
            for name, (seconds, memory) in results.items():
                diff = float(jnp.max(jnp.abs(grads[name] - ref)) / jnp.max(jnp.abs(ref)))
                say(
                    f"{name:31s} {n:3d} {steps:6d} {fmt_seconds(seconds):>11s} "
                    f"{fmt_bytes(memory):>13s}   {diff:.1e}"
                )
                rows.append(
                    Row(
                        "neural ODE: adjoints",
                        f"{name}, n = {n}, {steps} steps",
                        f"{fmt_seconds(seconds)}, {fmt_bytes(memory)}, diff {diff:.0e}",
                    )
                )
    return rows


def _flow_problem(n, degree, seed=0):
    model = models.LinearNeuralODE.relaxed_balanced(jax.random.key(seed), n, degree=degree, lam=0.5)
    kx, kt = jax.random.split(jax.random.key(seed + 1))
    rank = max(1, n // 2)
    target = jax.random.normal(kt, (n, rank)) @ jax.random.normal(kx, (rank, n)) / np.sqrt(rank)
    X = jax.random.normal(jax.random.key(seed + 2), (n, 20))
    return model, (X, target @ X)


def _regression(z, data):
    X, Y = data
    return 0.5 * jnp.mean(jnp.sum((z @ X - Y) ** 2, axis=0))


OPTS = dict(
    saveat=flows.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)),
    stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
)


def _flows(model, data, K):
    start = time.perf_counter()
    euc = flows.euclidean_flow(model, _regression, 0.0, 2.0, args=data, **OPTS)
    jax.block_until_ready(euc.zs)
    t_euc = time.perf_counter() - start
    start = time.perf_counter()
    intr = flows.intrinsic_flow(K, _regression, 0.0, 2.0, model.lift(), args=data, **OPTS)
    jax.block_until_ready(intr.zs)
    t_intr = time.perf_counter() - start
    deviation = float(jnp.max(flows.relative_deviation(euc, intr)))
    return deviation, t_euc, t_intr, euc, intr


def bench_flows(quick):
    rows = []
    for n in (4,) if quick else (4, 8):
        model, data = _flow_problem(n, 10)
        K = manifolds.intrinsic_metric(model)
        deviation, first_euc, first_intr, _, _ = _flows(model, data, K)
        _, t_euc, t_intr, euc, intr = _flows(model, data, K)
        say(
            f"flows n = {n}, degree 10 (D = {model.coeffs.size}): max deviation {deviation:.1e}; "
            f"Euclidean {fmt_seconds(t_euc)} ({int(euc.stats['num_steps'])} steps; first call "
            f"{fmt_seconds(first_euc)}), intrinsic {fmt_seconds(t_intr)} "
            f"({int(intr.stats['num_steps'])} steps; first call {fmt_seconds(first_intr)})"
        )
        rows += [
            Row(
                "neural ODE: flows",
                f"n = {n}: max deviation",
                f"{deviation:.1e}",
                "<= 1e-8",
                "met" if deviation <= 1e-8 else "NOT MET",
            ),
            Row("neural ODE: flows", f"n = {n}: Euclidean flow", fmt_seconds(t_euc)),
            Row("neural ODE: flows", f"n = {n}: intrinsic flow", fmt_seconds(t_intr)),
        ]
    return rows


def bench_convergence(quick):
    if quick:
        return []
    sizes, deviations = [], []
    K = manifolds.LogMeanMetric()  # coarse bases are below the registration's tolerance
    for degree in (2, 4, 6, 8, 10):
        model, data = _flow_problem(3, degree)
        deviation = _flows(model, data, K)[0]
        sizes.append(degree + 1)
        deviations.append(deviation)
    rows = []
    say("basis size   max deviation   observed order")
    for i, (size, deviation) in enumerate(zip(sizes, deviations)):
        order = (
            ""
            if i == 0
            else f"{np.log(deviations[i - 1] / deviation) / np.log(size / sizes[i - 1]):.1f}"
        )
        say(f"{size:10d}   {deviation:13.2e}   {order}")
        rows.append(
            Row(
                "neural ODE: basis",
                f"basis size {size}: max deviation",
                f"{deviation:.1e}" + (f", observed order {order}" if order else ""),
            )
        )
    return rows


def main(quick: bool = False) -> list[Row]:
    return run_benches((bench_adjoints, bench_flows, bench_convergence), quick)


if __name__ == "__main__":
    script_main(__doc__, main)
