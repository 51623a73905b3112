r"""Benchmark of building an ensemble of relaxed-balanced inits: `jax.vmap` over λ against
a Python loop of the eager constructor.

    python benchmarks/bench_init.py [--quick]

For each linear model, 101 members with λ on a grid (one key, as `intrinsic sweep` builds
them): a Python loop calling `relaxed_balanced(key, ..., float(lam))` 101 times, against
one `jax.vmap` over the array of λ, both eagerly (no `jit`; what `intrinsic sweep` does,
so its time includes tracing) and under `jax.jit` after compilation. The members agree to
rounding (the largest difference relative to the member's norm is reported). The loop
and the eager vmap are also timed once from a cold start (first call, including the
compilation of every operation for its shapes), since an ensemble is usually built once;
these figures depend on what ran before in the process. `--quick`: 3 repeats instead of 7.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import models
from benchmarks._common import Row, fmt_seconds, run_benches, say, script_main, time_calls

jax.config.update("jax_enable_x64", True)

NUM_MEMBERS = 101

# name -> (build(key, lam), λ grid): feasible for every λ on the grid.
CASES = {
    "TwoLayerLinear (4,3,5)": (
        lambda k, lam: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 5, lam),
        (-1.0, 1.0),
    ),
    "DeepLinear (2,3,4,4)": (
        lambda k, lam: models.DeepLinear.relaxed_balanced(k, (2, 3, 4, 4), (lam, 0.2)),
        (0.0, 1.0),
    ),
    "DiagonalLinear (6,), L=3": (
        lambda k, lam: models.DiagonalLinear.relaxed_balanced(k, (6,), 3, (lam, -0.5 * lam)),
        (-1.0, 1.0),
    ),
}


def _max_relative_difference(batch, members):
    worst = 0.0
    for i, member in enumerate(members):
        for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(member), strict=True):
            worst = max(worst, float(jnp.linalg.norm(a[i] - b) / jnp.linalg.norm(b)))
    return worst


def _cold(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _bench_case(name, build, lams, quick):
    key = jax.random.key(0)
    lam_array = jnp.asarray(lams)
    vmapped = jax.vmap(lambda lam: build(key, lam))
    jitted = jax.jit(vmapped)
    fns = {
        "loop": lambda: [build(key, float(lam)) for lam in lams],
        "vmap": lambda: vmapped(lam_array),
        "jit": lambda: jitted(lam_array),
    }
    cold = {k: _cold(fns[k]) for k in ("loop", "vmap")}
    times = time_calls(fns, repeats=3 if quick else 7)
    diff = _max_relative_difference(fns["jit"](), fns["loop"]())
    ratio, ratio_jit = times["loop"] / times["vmap"], times["loop"] / times["jit"]
    say(
        f"{name}, {len(lams)} members: loop {fmt_seconds(times['loop'])}, vmap "
        f"{fmt_seconds(times['vmap'])} ({ratio:.0f}x), jit(vmap) "
        f"{fmt_seconds(times['jit'])} ({ratio_jit:.0f}x); first call: loop "
        f"{fmt_seconds(cold['loop'])}, vmap {fmt_seconds(cold['vmap'])}; members agree "
        f"to {diff:.1e}"
    )
    label, n = f"init: {name}", len(lams)
    first = f"{fmt_seconds(cold['loop'])}, {fmt_seconds(cold['vmap'])}"
    return [
        Row(label, f"{n} members, Python loop", fmt_seconds(times["loop"])),
        Row(label, f"{n} members, vmap (eager)", fmt_seconds(times["vmap"])),
        Row(label, f"{n} members, jit(vmap), compiled", fmt_seconds(times["jit"])),
        Row(label, "loop / vmap", f"{ratio:.0f}x"),
        Row(label, "loop / jit(vmap)", f"{ratio_jit:.0f}x"),
        Row(label, "first call: loop, vmap", first),
        Row(label, "max |vmap - loop| / |member|", f"{diff:.1e}", "rounding"),
    ]


def bench_init(quick):
    # JAX's own first-use costs (backend, PRNG) out of the first case's cold figures.
    jax.block_until_ready(jax.random.normal(jax.random.key(1), (2,)) + 1.0)
    rows = []
    for name, (build, (lo, hi)) in CASES.items():
        rows += _bench_case(name, build, np.linspace(lo, hi, NUM_MEMBERS), quick)
    return rows


def main(quick: bool = False) -> list[Row]:
    return run_benches((bench_init,), quick)


if __name__ == "__main__":
    script_main(__doc__, main)
