r"""Per-call overhead of `flows.euclidean_flow` against a hand-written `diffrax.diffeqsolve`.

    python benchmarks/bench_overhead.py [--quick]    (or all benchmarks: python -m benchmarks)

1. **Warm call, like for like.** A two-layer linear network $Z = UV^\top$ of
   $D = (n + m)r = 90$, $800$ and $30{,}000$ parameters, least-squares loss
   $f(z, (X, Y)) = \tfrac12 \operatorname{mean}_k \|zX_k - Y_k\|^2$ on 32 samples passed
   in `args`, $t \in [0, 1]$. `euclidean_flow` with its defaults (Tsit5,
   `PIDController(rtol=1e-8, atol=1e-8)`, `SaveAt(t0=True, t1=True)`, `max_steps=100_000`,
   `throw=True`) against the same solve written directly: `diffeqsolve` of
   $\theta' = -\nabla_\theta f(\varphi(\theta), \text{args})$ with the same solver,
   controller, tolerances, step budget and `throw`, saving what a `FlowSolution` records
   by default: $z$, the loss and the conserved quantities $h(\theta)$ at $t_0$ and $t_1$
   (`SubSaveAt(fn=...)`), and $\theta(t_1)$. Both are compiled before timing, both block
   until ready on their whole output, float64. The hand-written solve is timed two ways:
   `eqx.filter_jit` of a function of the model and the data (how one writes it for an
   Equinox model; this is the like-for-like baseline of the target), and `jax.jit` of a
   function of the raw parameter arrays (the floor: JAX's fastest dispatch path).
   Target: ours / baseline $\le 1.1$ at each size.
2. **Data sweep.** Ten data sets ($D = 90$) through `args` (one compilation) against ten
   fresh closures over the data (a new function each time: ten compilations), total
   time including compilation. Expected: ≥ 10× faster through `args`.

The two solves take the same steps (checked) and agree to rounding (checked).
"""

import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flows  # noqa: E402
import models  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    CompileCounter,
    Row,
    fmt_seconds,
    run_benches,
    say,
    script_main,
    time_calls,
    verdict,
)

SIZES = {90: (5, 9, 5), 800: (20, 20, 20), 30_000: (100, 150, 100)}  # D: (n, r, m)
NUM_SAMPLES, T1, TARGET, SWEEP = 32, 1.0, 1.1, 10
CONTROLLER = dfx.PIDController(rtol=1e-8, atol=1e-8)  # euclidean_flow's default


def least_squares(z, data):
    """The loss `f(z, args)`, with the data `(X, Y)` as the flow's `args`."""
    X, Y = data
    return 0.5 * jnp.mean(jnp.sum((z @ X - Y) ** 2, axis=0))


def _problem(D, seed=0):
    n, r, m = SIZES[D]
    model = models.TwoLayerLinear.random(jax.random.key(seed), n, r, m)
    kx, ky = jax.random.split(jax.random.key(seed + 1))
    data = (
        jax.random.normal(kx, (m, NUM_SAMPLES)),
        jax.random.normal(ky, (n, NUM_SAMPLES)),
    )
    return model, data


def _hand_written(theta, static, data):
    # Everything of the library's flow, written directly against diffrax.
    def field(t, p, args):
        grad = jax.grad(lambda p: least_squares(eqx.combine(p, static).lift(), args))(p)
        return jax.tree.map(jnp.negative, grad)

    def summary(t, p, args):
        model = eqx.combine(p, static)
        z = model.lift()
        return {"z": z, "loss": least_squares(z, args), "laws": model.conservation_laws()}

    saveat = dfx.SaveAt(subs=(dfx.SubSaveAt(t0=True, t1=True, fn=summary), dfx.SubSaveAt(t1=True)))
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Tsit5(),
        0.0,
        T1,
        None,
        theta,
        args=data,
        saveat=saveat,
        stepsize_controller=CONTROLLER,
        max_steps=100_000,
        throw=True,
    )
    return sol.ys, sol.result, sol.stats


@eqx.filter_jit
def _baseline(model, data):
    theta, static = eqx.partition(model, eqx.is_inexact_array)
    return _hand_written(theta, static, data)


def _warm_call(D, quick):
    model, data = _problem(D)
    theta, static = eqx.partition(model, eqx.is_inexact_array)
    floor = jax.jit(lambda theta, data: _hand_written(theta, static, data))
    fns = {
        "ours": lambda: flows.euclidean_flow(model, least_squares, 0.0, T1, args=data),
        "baseline": lambda: _baseline(model, data),
        "floor": lambda: floor(theta, data),
    }
    ours, (ys, _, stats) = fns["ours"](), fns["baseline"]()
    if int(ours.stats["num_steps"]) != int(stats["num_steps"]) or not np.allclose(
        ours.zs, ys[0]["z"], rtol=1e-12, atol=1e-12
    ):
        raise AssertionError(f"D = {D}: the two solves differ; the comparison is unfair.")
    times = time_calls(fns, repeats=7 if quick else 15, min_run_s=0.05 if quick else 0.2)
    return times, int(stats["num_steps"])


def bench_warm_call(quick):
    rows = []
    say(f"{'D':>7}{'ours':>11}{'baseline':>11}{'ratio':>8}{'jax.jit floor':>15}{'ratio':>8}")
    for D in SIZES:
        t, steps = _warm_call(D, quick)
        ratio, floor_ratio = t["ours"] / t["baseline"], t["ours"] / t["floor"]
        say(
            f"{D:>7}{fmt_seconds(t['ours']):>11}{fmt_seconds(t['baseline']):>11}"
            f"{ratio:>8.2f}{fmt_seconds(t['floor']):>15}{floor_ratio:>8.2f}"
            f"   ({steps} steps)"
        )
        bench = f"overhead D={D:,}"
        rows += [
            Row(bench, "warm call: euclidean_flow", fmt_seconds(t["ours"])),
            Row(bench, "warm call: diffeqsolve, eqx.filter_jit", fmt_seconds(t["baseline"])),
            Row(
                bench,
                "ours / diffeqsolve",
                f"{ratio:.2f}",
                f"<= {TARGET}",
                verdict(ratio <= TARGET),
            ),
            Row(bench, "warm call: diffeqsolve, jax.jit (floor)", fmt_seconds(t["floor"])),
            Row(bench, "ours / floor", f"{floor_ratio:.2f}"),
        ]
    return rows


def bench_sweep(quick):
    # A loss used nowhere else, so that the first call through `args` compiles too.
    def sweep_loss(z, data):
        return least_squares(z, data)

    model, _ = _problem(90)
    datasets = [_problem(90, seed=10 + i)[1] for i in range(SWEEP)]
    jax.block_until_ready(datasets)

    def through_args():
        for data in datasets:
            jax.block_until_ready(flows.euclidean_flow(model, sweep_loss, 0.0, T1, args=data))

    def through_closures():
        for data in datasets:
            closure = lambda z, _, data=data: least_squares(z, data)  # noqa: E731
            jax.block_until_ready(flows.euclidean_flow(model, closure, 0.0, T1))

    figures = {}
    for name, run in (("args", through_args), ("closures", through_closures)):
        with CompileCounter() as counter:
            start = time.perf_counter()
            run()
            figures[name] = (time.perf_counter() - start, counter.count)
    (t_args, c_args), (t_clos, c_clos) = figures["args"], figures["closures"]
    ratio = t_clos / t_args
    say(
        f"sweep of {SWEEP} data sets (D = 90): through args {fmt_seconds(t_args)} "
        f"({c_args} compilations), fresh closures {fmt_seconds(t_clos)} ({c_clos} "
        f"compilations): {ratio:.0f}x"
    )
    bench = f"overhead: {SWEEP}-value sweep"
    return [
        Row(bench, "through args: total, compilations", f"{fmt_seconds(t_args)}, {c_args}"),
        Row(bench, "fresh closures: total, compilations", f"{fmt_seconds(t_clos)}, {c_clos}"),
        Row(bench, "closures / args", f"{ratio:.0f}x", ">= 10x", verdict(ratio >= 10)),
    ]


def main(quick: bool = False) -> list[Row]:
    return run_benches((bench_warm_call, bench_sweep), quick)


if __name__ == "__main__":
    script_main(__doc__, main)
