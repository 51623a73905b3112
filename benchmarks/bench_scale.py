r"""Benchmarks of scale: ensembles with `vmap`, sharding over devices, large models.

    python benchmarks/bench_scale.py [--quick]

1. **Ensemble vs loop.** 1,000 two-layer linear flows, $(n, r, m) = (2, 2, 2)$,
   relaxed balanced with $\lambda$ swept over $[-1, 1]$, regression loss, $t_1 = 5$,
   rtol = atol = 1e-8: one `flows.euclidean_ensemble` call against a Python loop of
   `flows.euclidean_flow` calls (the loop's time is measured on 25 members, after
   compilation, and scaled to 1,000). Target: ensemble ≥ 50× faster. `--quick`: 100.
   For reference, the floor: the same solve written directly with `diffrax.diffeqsolve`
   (same solver, controller and vector field, nothing of the library), `jax.vmap`-ed.
2. **Sharded vs one device.** The same ensemble (256 members) with its batch axis on a
   4-device mesh against no sharding, in a subprocess with
   `XLA_FLAGS=--xla_force_host_platform_device_count=4` (4 simulated CPU devices on this
   host's cores). Target: no slowdown beyond 1.2×, identical results.
3. **Large model.** `flows.euclidean_flow` on `DeepLinear` with widths $(512,)\times 9$
   ($L = 8$, $D = 2{,}097{,}152$, $d = 262{,}144$), regression loss on 64 samples:
   steps per second after compilation and peak memory (fresh subprocess), against the
   size of one parameter vector; and one matrix-free $M(\theta)v$. Nothing of size $D^2$
   (35 TB) or $d^2$ (550 GB) is formed. `--quick`: widths $(128,)\times 9$.
"""

import json
import os
import subprocess
import sys
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
    REPO_ROOT,
    Row,
    fmt_bytes,
    fmt_seconds,
    measure_in_subprocess,
    peak_memory_of,
    run_benches,
    say,
    script_main,
    time_call,
    verdict,
)

jax.config.update("jax_enable_x64", True)


def regression(z, data):
    """The loss `f(z, args)`, with the data `(X, Y)` as the flows' `args`."""
    X, Y = data
    return 0.5 * jnp.mean(jnp.sum((z @ X - Y) ** 2, axis=0))


def _ensemble_problem(size):
    keys = jax.random.split(jax.random.key(0), size)
    members = [
        models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 2, float(lam))
        for k, lam in zip(keys, np.linspace(-1.0, 1.0, size))
    ]
    kx, ky = jax.random.split(jax.random.key(1))
    data = (jax.random.normal(kx, (2, 8)), jax.random.normal(ky, (2, 8)))
    return members, data


OPTS = dict(stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8))


def _raw_diffrax(batch, data):
    # The ensemble with nothing of the library: diffeqsolve of θ' = -∇(f∘φ)(θ), vmapped.
    params, static = eqx.partition(batch, eqx.is_array)

    def field(t, p, args):
        grad = jax.grad(lambda p: regression(eqx.combine(p, static).lift(), args))(p)
        return jax.tree.map(jnp.negative, grad)

    def solve(p, data):
        controller = OPTS["stepsize_controller"]
        term = dfx.ODETerm(field)
        sol = dfx.diffeqsolve(
            term, dfx.Tsit5(), 0.0, 5.0, None, p, args=data, stepsize_controller=controller
        )
        return sol.ys

    solve = jax.jit(jax.vmap(solve, in_axes=(0, None)))
    return lambda: solve(params, data)


def bench_ensemble(quick):
    size, loop_size = (100, 10) if quick else (1000, 25)
    members, data = _ensemble_problem(size)
    batch = flows.stack(members)
    t_batch = time_call(
        lambda: flows.euclidean_ensemble(batch, regression, 0.0, 5.0, args=data, **OPTS).zs,
        repeats=3,
    )
    flows.euclidean_flow(members[0], regression, 0.0, 5.0, args=data, **OPTS)  # compile once
    start = time.perf_counter()
    for m in members[:loop_size]:
        sol = flows.euclidean_flow(m, regression, 0.0, 5.0, args=data, **OPTS)
        jax.block_until_ready(sol.zs)
    t_loop = (time.perf_counter() - start) / loop_size * size
    ratio = t_loop / t_batch
    t_raw = time_call(_raw_diffrax(batch, data), repeats=3)
    say(
        f"ensemble of {size}: vmapped {fmt_seconds(t_batch)}, loop {fmt_seconds(t_loop)} "
        f"(scaled from {loop_size}), ratio {ratio:.0f}x; plain diffrax vmapped "
        f"{fmt_seconds(t_raw)}"
    )
    return [
        Row("scale: ensemble", f"{size} two-layer flows, vmapped", fmt_seconds(t_batch)),
        Row(
            "scale: ensemble",
            f"{size} flows, plain diffrax.diffeqsolve vmapped (floor)",
            f"{fmt_seconds(t_raw)} (library / plain: {t_batch / t_raw:.2f})",
        ),
        Row("scale: ensemble", f"{size} flows, Python loop", fmt_seconds(t_loop)),
        Row("scale: ensemble", "loop / vmapped", f"{ratio:.0f}x", ">= 50x", verdict(ratio >= 50)),
    ]


_SHARDED = """
import json, time, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import flows
from benchmarks.bench_scale import _ensemble_problem, regression, OPTS
from benchmarks._common import time_call
members, data = _ensemble_problem({size})
batch = flows.stack(members)
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))
opts = dict(args=data, **OPTS)
one = lambda: flows.euclidean_ensemble(batch, regression, 0.0, 5.0, **opts).zs
many = lambda: flows.euclidean_ensemble(batch, regression, 0.0, 5.0, sharding=sharding, **opts).zs
times = {{k: time_call(fn, repeats=3) for k, fn in (("one", one), ("many", many))}}
diff = float(jnp.max(jnp.abs(one() - many())))
print(json.dumps({{**times, "maxdiff": diff, "devices": len(jax.devices())}}))
"""


def bench_sharding(quick):
    size = 64 if quick else 256
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED.format(size=size)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = out["many"] / out["one"]
    say(
        f"sharded ensemble of {size} on {out['devices']} devices: {fmt_seconds(out['many'])} "
        f"vs {fmt_seconds(out['one'])} on one; max difference {out['maxdiff']:.1e}"
    )
    return [
        Row("scale: sharding", f"{size} flows, 1 device", fmt_seconds(out["one"])),
        Row("scale: sharding", f"{size} flows, 4 simulated devices", fmt_seconds(out["many"])),
        Row(
            "scale: sharding",
            "4-device / 1-device time",
            f"{ratio:.2f}",
            "<= 1.2",
            verdict(ratio <= 1.2),
        ),
        Row("scale: sharding", "max |z_sharded - z_single|", f"{out['maxdiff']:.1e}", "rounding"),
    ]


def _large_problem(width):
    model = models.DeepLinear.random(jax.random.key(0), (width,) * 9, scale=1.0)
    kx, ky = jax.random.split(jax.random.key(1))
    data = (jax.random.normal(kx, (width, 64)), 0.1 * jax.random.normal(ky, (width, 64)))
    return model, data


def _probe_large(width):
    model, data = _large_problem(width)
    run = lambda: flows.euclidean_flow(model, regression, 0.0, 0.05, args=data, **OPTS)
    sol = run()  # compile
    start = time.perf_counter()
    sol = jax.block_until_ready(run())
    seconds = time.perf_counter() - start
    memory = peak_memory_of(run)
    g = jax.random.normal(jax.random.key(2), (width, width))
    mv = eqx.filter_jit(lambda m, v: manifolds.induced_metric(m).mv(v))
    t_mv = time_call(lambda: mv(model, g), repeats=3)
    return {
        "seconds": seconds,
        "steps": int(sol.stats["num_steps"]),
        "mv": t_mv,
        "ok": sol.successful,
        **memory,
    }


def bench_large(quick):
    width = 128 if quick else 512
    out = measure_in_subprocess("benchmarks.bench_scale", "large", {"width": width}, timeout=1800)
    D, d = 8 * width**2, width**2
    rate = out["steps"] / out["seconds"]
    theta_bytes = 8 * D
    say(
        f"DeepLinear ({width},)x9, D = {D:,}: {out['steps']} steps in "
        f"{fmt_seconds(out['seconds'])} ({rate:.1f} steps/s), peak "
        f"{fmt_bytes(out['peak_bytes'])} = {out['peak_bytes'] / theta_bytes:.1f} x |θ|; "
        f"M v {fmt_seconds(out['mv'])}"
    )
    return [
        Row("scale: large", f"Euclidean flow, D = {D:,}", f"{rate:.1f} steps/s"),
        Row("scale: large", "peak memory of the flow", fmt_bytes(out["peak_bytes"]), "O(D + d)"),
        Row(
            "scale: large",
            "peak / size of θ",
            f"{out['peak_bytes'] / theta_bytes:.1f}",
            "O(1)",
            verdict(out["peak_bytes"] < 64 * theta_bytes),
        ),
        Row("scale: large", f"M(θ)v, d = {d:,}", fmt_seconds(out["mv"])),
    ]


def main(quick: bool = False) -> list[Row]:
    return run_benches((bench_ensemble, bench_sharding, bench_large), quick)


if __name__ == "__main__":
    script_main(__doc__, main, probes={"large": lambda c: _probe_large(c["width"])})
