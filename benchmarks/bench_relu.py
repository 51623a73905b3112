r"""ReLU networks: law counts against SageMath, and the path-lifting at a million paths.

    python benchmarks/bench_relu.py [--quick]      (or all benchmarks: python -m benchmarks)

1. **Law counts.** `manifolds.lie_algebra_trace` on `models.ReLUNetwork.random` of widths
   (4, 4, 4) and (8, 5, 8, 5, 5) (8,000 paths): $\dim\mathrm{Lie}(W)(\theta)$ and the number of
   laws, checked against the closed form (one per hidden neuron) and the Frobenius
   property. `cold` includes tracing and compilation, `warm` is a second call. The
   SageMath times (85.1 s and 220 s to verify a known count) are those quoted in the
   issue; target: at least 100x faster. Each runs in a fresh process with one OpenBLAS
   thread (see `_BLAS_ENV`).
2. **A million paths.** Widths $(10,)\times 6$: $10^6$ paths, $D = 500$. Time of the jitted
   path-lifting, of one induced-metric product $M(\theta)v$ (`manifolds.induced_metric`:
   one jvp and one vjp of the lifting), and of one intrinsic-metric product $K(z)v$
   (`manifolds.ReLUPathMetric`, recovery of $|\theta|$ from $z$ included), each with its
   peak memory measured in a fresh subprocess. The dense Jacobian ($10^6\times 500$,
   4 GB) is not formed; it is timed and measured at $(10,)\times 5$ ($10^5$ paths,
   320 MB) against $M(\theta)v$ there. `--quick`: $(10,)\times 4$ for both, timings only (no memory subprocesses).
"""

import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp

# Rank decisions need float64; the library itself follows the default dtype.
jax.config.update("jax_enable_x64", True)

import manifolds  # noqa: E402
import models  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
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

SAGEMATH_SECONDS = {(4, 4, 4): 85.1, (8, 5, 8, 5, 5): 220.0}
TARGET_SPEEDUP = 100.0
LARGE, LARGE_QUICK = (10,) * 6, (10,) * 4
DENSE, DENSE_QUICK = (10,) * 5, (10,) * 4
# glibc returns freed blocks above this size to the system at once (its adaptive threshold
# would otherwise keep a freed buffer for reuse, and a peak-memory probe would read zero).
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
# One OpenBLAS thread for the law counts: on a small machine, OpenBLAS threads spinning
# against XLA's slowed the SVDs of `lie_algebra_trace` 50-fold (8000 x 145: 4 s, not 0.08 s).
_BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _network(widths):
    return models.ReLUNetwork.random(jax.random.key(0), widths)


def _probe_laws(widths) -> dict:
    net = _network(tuple(widths))
    start = time.perf_counter()
    result = manifolds.lie_algebra_trace(net)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    manifolds.lie_algebra_trace(net)
    warm = time.perf_counter() - start
    ok = result.converged and result.frobenius and result.num_conservation_laws == net.num_hidden
    return {
        "cold": cold,
        "warm": warm,
        "ok": bool(ok),
        "D": result.num_parameters,
        "dim": result.dimension,
        "laws": result.num_conservation_laws,
        "frobenius": result.frobenius,
        "paths": net.num_paths,
        "hidden": net.num_hidden,
    }


def bench_laws(quick: bool) -> list[Row]:
    del quick  # both are small
    rows = []
    for widths, sage in SAGEMATH_SECONDS.items():
        out = _subprocess("laws", widths, _BLAS_ENV)
        if not out["ok"]:
            raise AssertionError(f"{widths}: {out} disagrees with {out['hidden']} laws.")
        cold, warm = out["cold"], out["warm"]
        name = "relu laws " + str(widths).replace(" ", "")
        say(
            f"ReLU {widths}: D = {out['D']}, {out['paths']} paths, dim Lie = {out['dim']}, "
            f"laws = {out['laws']}; cold {fmt_seconds(cold)}, warm {fmt_seconds(warm)}; "
            f"SageMath {fmt_seconds(sage)}"
        )
        rows += [
            Row(
                name,
                "D, paths, dim Lie(W)(θ), laws (= #hidden), Frobenius",
                f"{out['D']}, {out['paths']}, {out['dim']}, {out['laws']}, {out['frobenius']}",
            ),
            Row(name, "time, cold / warm", f"{fmt_seconds(cold)} / {fmt_seconds(warm)}"),
            Row(
                name,
                f"speed-up vs SageMath {fmt_seconds(sage)}, cold / warm",
                f"{sage / cold:.0f}x / {sage / warm:.0f}x",
                f"≥ {TARGET_SPEEDUP:.0f}x",
                f"{verdict(sage / cold >= TARGET_SPEEDUP)} cold, "
                f"{verdict(sage / warm >= TARGET_SPEEDUP)} warm",
            ),
        ]
    return rows


_lift = jax.jit(lambda net: net.lift())
_mv = jax.jit(lambda net, g: manifolds.induced_metric(net).mv(g))
_kv = jax.jit(lambda metric, z, g: metric(z).mv(g))


@jax.jit
def _dense(net):
    phi, theta = manifolds.lifting_function(net)
    flat, unravel = jax.flatten_util.ravel_pytree(theta)
    return jax.jacfwd(lambda t: jax.flatten_util.ravel_pytree(phi(unravel(t)))[0])(flat)


_KINDS = ("lift", "mv", "kv", "dense")


def _setup(kind: str, widths):
    """`(compiled, args, extra)`: the computation of `kind`, compiled ahead of time."""
    net = _network(tuple(widths))
    g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), net.lift())
    extra = {}
    if kind == "lift":
        fn, args = _lift, (net,)
    elif kind == "mv":
        fn, args = _mv, (net, g)
    elif kind == "kv":
        start = time.perf_counter()
        metric = jax.block_until_ready(manifolds.ReLUPathMetric(net))
        extra["build"] = time.perf_counter() - start
        fn, args = _kv, (metric, net.lift(), g)
    else:
        fn, args = _dense, (net,)
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    extra["compile"] = time.perf_counter() - start
    return compiled, args, extra


def _probe(kind: str, widths) -> dict:
    # In a fresh process: compile ahead of time, so that the first execution (the one
    # whose peak memory is measured) finds no buffer of its own size to reuse; then time.
    compiled, args, out = _setup(kind, widths)
    memory = peak_memory_of(lambda: compiled(*args))
    return {**out, **memory, "seconds": time_call(lambda: compiled(*args), repeats=3)}


def _subprocess(kind, widths, env):
    # A fresh process (cold really is cold; peak memory is its own), with `env` set for it.
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return measure_in_subprocess(
            "benchmarks.bench_relu", kind, {"widths": list(widths)}, timeout=1200
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _measure(kind, widths, quick):
    if quick:  # in-process timings only: each subprocess costs seconds of start-up
        compiled, args, out = _setup(kind, widths)
        return {**out, "peak_bytes": None, "seconds": time_call(lambda: compiled(*args), repeats=3)}
    return _subprocess(kind, widths, _MALLOC_ENV)


def _memory(out) -> str:
    return "not measured (--quick)" if out["peak_bytes"] is None else fmt_bytes(out["peak_bytes"])


def bench_large(quick: bool) -> list[Row]:
    large, dense = (LARGE_QUICK, DENSE_QUICK) if quick else (LARGE, DENSE)
    paths, d = math.prod(large), sum(a * b for a, b in zip(large, large[1:]))
    z_bytes = 8 * paths
    name = f"relu {paths:.0e} paths".replace("+0", "")
    rows = []
    results = {kind: _measure(kind, large, quick) for kind in ("lift", "mv", "kv")}
    labels = {
        "lift": "path-lifting Φ(θ)",
        "mv": "M(θ)v (induced, jvp + vjp)",
        "kv": "K(z)v (ReLUPathMetric, recovery included)",
    }
    say(f"ReLU {large}: {paths:,} paths, D = {d}, z takes {fmt_bytes(z_bytes)}")
    for kind, out in results.items():
        say(
            f"  {labels[kind]}: {fmt_seconds(out['seconds'])} (compiled in "
            f"{fmt_seconds(out['compile'])}), peak {_memory(out)}"
            + (f", metric built in {fmt_seconds(out['build'])}" if "build" in out else "")
        )
        rows.append(
            Row(
                name,
                f"{labels[kind]}: time / peak memory",
                f"{fmt_seconds(out['seconds'])} / {_memory(out)}",
                f"O(#paths): z is {fmt_bytes(z_bytes)}",
                ""
                if out["peak_bytes"] is None
                else verdict(out["peak_bytes"] < 16 * z_bytes + 64 * 2**20),
            )
        )
    rows.append(
        Row(
            name,
            "ReLUPathMetric construction (BᵀB + AᵀA, Cholesky)",
            fmt_seconds(results["kv"]["build"]),
        )
    )
    if large != dense:
        rows.append(Row(name, "dense Jacobian", f"not formed: {fmt_bytes(8 * paths * d)}"))
    dense_paths, dense_d = math.prod(dense), sum(a * b for a, b in zip(dense, dense[1:]))
    dense_out, mv_out = _measure("dense", dense, quick), _measure("mv", dense, quick)
    say(
        f"ReLU {dense}: dense Jacobian {dense_paths:,} x {dense_d}: "
        f"{fmt_seconds(dense_out['seconds'])}, peak {_memory(dense_out)}; "
        f"M(θ)v {fmt_seconds(mv_out['seconds'])}, peak {_memory(mv_out)}"
    )
    smaller = (
        True if mv_out["peak_bytes"] is None else mv_out["peak_bytes"] < dense_out["peak_bytes"]
    )
    small = f"relu {dense_paths:.0e} paths".replace("+0", "")
    rows += [
        Row(
            small,
            f"dense Jacobian ({dense_paths:,} x {dense_d}): time / peak memory",
            f"{fmt_seconds(dense_out['seconds'])} / {_memory(dense_out)}",
        ),
        Row(
            small,
            "matrix-free M(θ)v: time / peak memory",
            f"{fmt_seconds(mv_out['seconds'])} / {_memory(mv_out)}",
            "faster and smaller than dense",
            verdict(mv_out["seconds"] < dense_out["seconds"] and smaller),
        ),
    ]
    return rows


def main(quick: bool = False) -> list[Row]:
    """Print the figures as they come; return rows for `python -m benchmarks`."""
    jnp.zeros(1).block_until_ready()  # JAX start-up is not the first row's cost
    return run_benches((bench_laws, bench_large), quick)


if __name__ == "__main__":
    probes = {kind: (lambda c, kind=kind: _probe(kind, c["widths"])) for kind in _KINDS}
    script_main(__doc__, main, probes={**probes, "laws": lambda c: _probe_laws(c["widths"])})
