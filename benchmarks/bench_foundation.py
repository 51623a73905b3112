r"""Benchmarks of the foundation: the matrix-free induced metric, the Euclidean flow, the CLI.

Run all benchmark scripts and print one table::

    python -m benchmarks            # full run (a few minutes on 2 CPU cores)
    python -m benchmarks --quick    # smaller sizes (under a minute)

or this script alone::

    python benchmarks/bench_foundation.py [--quick]

Everything runs in float64 on the default JAX device. Times are medians over several
repeats after a warm-up call (which compiles), each call followed by
`jax.block_until_ready`. Peak memory is measured in a fresh subprocess per measurement
(see `benchmarks/_common.py`). No timing is asserted: the table gives each figure, the
issue's target and whether it is met on this machine.

1. **Induced metric, matrix-free vs dense.** $M(\theta)g = \partial\varphi\,\partial\varphi^\top g$
   with `manifolds.induced_metric(model).mv(g)`, the operator built inside an
   `eqx.filter_jit`-ed function of `(model, g)` as a user would, against the dense route:
   $J = \partial\varphi(\theta)$ by `jax.jacrev` of the raveled lifting (cheaper than `jacfwd`
   since $d < D$), then $JJ^\top$, then $(JJ^\top)g$. Both routes start from the model, so
   the ratio is what a user saves for one product (target: matrix-free ≥ 20× faster). The
   break-even number of products, after which building $JJ^\top$ once would have paid off,
   is printed too. Model: `models.DeepLinear.random` with $D \approx 10^5$ parameters and
   $d = 400$. The square case widths `(100,)*11` ($D = 10^5$, $d = 10^4$) is timed
   matrix-free only: its dense $J$ alone is 8 GB and $JJ^\top$ costs $2\cdot10^{13}$ flops,
   out of reach of a CPU benchmark, so its dense cost is stated, not measured.
   `--quick`: widths `(30,)*6` ($D = 4500$, $d = 900$), both routes.

2. **Euclidean flow overhead.** `flows.euclidean_flow(model, f, 0, 10, args=(X, Y),
   saveat=SaveAt(ts=50 points), stepsize_controller=PIDController(rtol=atol=1e-8))` against a
   hand-written `diffrax.diffeqsolve` of the same vector field
   $\theta' = -\nabla(f\circ\varphi)(\theta)$ (Tsit5, `PIDController` with the same
   tolerances, `SaveAt(ts=...)` of $\theta$ only, `eqx.filter_jit`, the data in `args`), for
   `TwoLayerLinear.relaxed_balanced(key, 10, 5, 8, 0.5)` and `DeepLinear` models with the
   regression loss $f(z, (X, Y)) = \tfrac12\,\mathrm{mean}((zX - Y)^2)$ (its data in `args`, so
   they are traced rather than baked into the compiled code). Target: overhead ratio ≤ 1.3. The
   library also saves $z$, the loss and the conservation laws at every `ts`; in the full
   run a second hand-written solve saving the same summary separates that work from the
   wrapper's own per-call cost. Also checked, by counting XLA compilations with `jax.monitoring`: a second
   call on another model of the same shape (and with other `t1`/`ts` values, other
   tolerances, and other data in `args`) must not recompile. The full run adds a larger
   `DeepLinear`, and shows that a fresh closure as loss does recompile (by design: a new
   function object is a new static argument).

3. **`intrinsic run` end to end.** Wall time of
   `python -m intrinsic run --out TMPDIR` in a subprocess, imports and compilation
   included (target < 20 s). Skipped, and said so, when the `intrinsic` package is not available.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import flows
import manifolds
import models

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (
    # noqa: E402
    REPO_ROOT,
    Row,
    compiles_during,
    fmt_bytes,
    fmt_seconds,
    measure_in_subprocess,
    peak_memory_of,
    run_benches,
    say,
    script_main,
    time_call,
    time_calls,
    verdict,
)

# Benchmarks run in float64 (the library itself follows the user's setting). No array
# has been created yet: the imports above only define functions and classes.
jax.config.update("jax_enable_x64", True)

MODULE = "benchmarks.bench_foundation"
BYTES = jnp.dtype(jnp.float64).itemsize


# =========================================================================== 1. metric


@eqx.filter_jit
def metric_matrix_free(model, g):
    """$M(\\theta)g$ with the library's matrix-free operator, built under jit."""
    return manifolds.induced_metric(model).mv(g)


def _raveled_lifting(model):
    phi, theta = manifolds.lifting_function(model)
    flat, unravel = ravel_pytree(theta)
    return (lambda x: ravel_pytree(phi(unravel(x)))[0]), flat


@eqx.filter_jit
def dense_jacobian(model):
    """$J = \\partial\\varphi(\\theta)$, shape (d, D), by reverse mode (d < D)."""
    phi_flat, flat = _raveled_lifting(model)
    return jax.jacrev(phi_flat)(flat)


@jax.jit
def gram(J):
    return J @ J.T


@jax.jit
def dense_product(A, g):
    return (A @ g.ravel()).reshape(g.shape)


@eqx.filter_jit
def metric_dense(model, g):
    """The whole dense route from the model: J, then JJᵀ, then (JJᵀ)g."""
    return dense_product(gram(dense_jacobian(model)), g)


def _metric_problem(widths):
    model = models.DeepLinear.random(jax.random.key(0), widths)
    g = jax.random.normal(jax.random.key(1), jax.eval_shape(model.lift).shape)
    D = sum(w.size for w in model.weights)
    return model, g, D, g.size


def _probe_metric(route: str, widths) -> dict:
    """Subprocess side: peak memory of one product by `route` ('matrix-free' or 'dense')."""
    model, g, _, _ = _metric_problem(tuple(widths))
    fn = {"matrix-free": metric_matrix_free, "dense": metric_dense}[route]
    compiled = fn.lower(model, g).compile()
    return peak_memory_of(lambda: compiled(model, g))


def _memory(route, widths) -> int:
    reply = measure_in_subprocess(MODULE, "metric", {"route": route, "widths": list(widths)})
    return reply["peak_bytes"]


def bench_metric(quick: bool) -> list[Row]:
    name = "1 induced metric"
    rows = []
    compared = (30,) * 6 if quick else (20, 220, 220, 220, 20)
    model, g, D, d = _metric_problem(compared)
    label = f"DeepLinear{compared} D={D:,} d={d:,}"
    say(f"[{name}] {label}")

    t_mf = time_call(lambda: metric_matrix_free(model, g), repeats=9)
    say(f"  matrix-free M·g (operator built under jit): {fmt_seconds(t_mf)} per product")
    J = dense_jacobian(model)
    A = gram(J)
    repeats = 5
    times = time_calls(
        {
            "end-to-end": lambda: metric_dense(model, g),
            "jacobian": lambda: dense_jacobian(model),
            "gram": lambda: gram(J),
            "product": lambda: dense_product(A, g),
        },
        repeats=repeats,
        min_run_s=0.02,
    )
    say(
        f"  dense: J {fmt_seconds(times['jacobian'])}, JJᵀ {fmt_seconds(times['gram'])}, "
        f"(JJᵀ)g {fmt_seconds(times['product'])}; end to end {fmt_seconds(times['end-to-end'])}"
    )
    ref = metric_dense(model, g)
    error = float(jnp.max(jnp.abs(metric_matrix_free(model, g) - ref)) / jnp.max(jnp.abs(ref)))
    mem_mf = _memory("matrix-free", compared)
    mem_dense = _memory("dense", compared)
    say(f"  peak memory: matrix-free {fmt_bytes(mem_mf)}, dense {fmt_bytes(mem_dense)}")
    ratio = times["end-to-end"] / t_mf
    say(
        f"  speed-up of matrix-free over dense: {ratio:,.0f}× (target ≥ 20×: "
        f"{'met' if ratio >= 20 else 'not met'})"
    )
    extra = t_mf - times["product"]
    build = times["end-to-end"] - times["product"]
    break_even = f"{build / extra:,.0f} products" if extra > 0 else "never (dense (JJᵀ)g no faster)"
    say(f"  dense JJᵀ pays off after {break_even}; relative difference {error:.1e}")
    rows += [
        Row(name, f"problem: {label}", ""),
        Row(name, "matrix-free M·g, time per product", fmt_seconds(t_mf)),
        Row(name, "dense: build J (jacrev)", fmt_seconds(times["jacobian"])),
        Row(name, "dense: build JJᵀ from J", fmt_seconds(times["gram"])),
        Row(name, "dense: (JJᵀ)g once built", fmt_seconds(times["product"])),
        Row(name, "dense: model → J → JJᵀ → (JJᵀ)g", fmt_seconds(times["end-to-end"])),
        Row(
            name,
            "speed-up matrix-free vs dense (1 product)",
            f"{ratio:,.0f}×",
            "≥ 20×",
            verdict(ratio >= 20),
        ),
        Row(name, "peak memory, matrix-free (subprocess)", fmt_bytes(mem_mf)),
        Row(name, "peak memory, dense (subprocess)", fmt_bytes(mem_dense)),
        Row(name, "size of J alone (d·D·8 B)", fmt_bytes(d * D * BYTES)),
        Row(name, "dense pays off after", break_even, "", "info"),
        Row(
            name,
            "max |Δ(M·g)| / max |M·g|, the two routes",
            f"{error:.1e}",
            "≲ 1e-12",
            verdict(error <= 1e-12),
        ),
    ]

    if not quick:
        square = (100,) * 11
        model, g, D, d = _metric_problem(square)
        label = f"DeepLinear(100,)*11 D={D:,} d={d:,}"
        say(f"[{name}] {label} (matrix-free only)")
        t_sq = time_call(lambda: metric_matrix_free(model, g), repeats=9)
        mem_sq = _memory("matrix-free", square)
        dense_bytes = d * D * BYTES + d * d * BYTES
        flops = 2 * d * d * D
        say(
            f"  matrix-free: {fmt_seconds(t_sq)} per product, peak {fmt_bytes(mem_sq)}; dense "
            f"would need {fmt_bytes(dense_bytes)} for J and JJᵀ and {flops:.0e} flops for JJᵀ"
        )
        rows += [
            Row(name, f"problem: {label}", ""),
            Row(name, "matrix-free M·g, time per product", fmt_seconds(t_sq)),
            Row(name, "peak memory, matrix-free (subprocess)", fmt_bytes(mem_sq)),
            Row(name, "dense J and JJᵀ: memory (not built)", fmt_bytes(dense_bytes), "", "info"),
            Row(name, "dense JJᵀ: flops (not built)", f"{flops:.0e}", "", "info"),
        ]
    return rows


# =========================================================================== 2. flow

T1 = 10.0
NUM_TIMES = 50
TOL = 1e-8


def regression(z, data):
    """$f(z, (X, Y)) = \\frac12 \\mathrm{mean}((zX - Y)^2)$; the data come in as `args`."""
    X, Y = data
    return 0.5 * jnp.mean((z @ X - Y) ** 2)


@eqx.filter_jit
def hand_flow(model, data, ts, summary=False):
    """The Euclidean flow written directly with diffrax, as a user would.

    Saves θ at `ts`, or, with `summary=True`, what `euclidean_flow` saves (z, the loss and
    the conservation laws), to separate that extra work from the wrapper's overhead.
    """
    theta, static = eqx.partition(model, eqx.is_inexact_array)

    def rebuild(p):
        return eqx.combine(p, static)

    def vector_field(t, p, args):
        grad = jax.grad(lambda q: regression(rebuild(q).lift(), args))(p)
        return jax.tree.map(jnp.negative, grad)

    def save(t, p, args):
        m = rebuild(p)
        z = m.lift()
        return {"z": z, "loss": regression(z, args), "laws": m.conservation_laws()}

    sol = dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        dfx.Tsit5(),
        ts[0],
        ts[-1],
        None,
        theta,
        args=data,
        saveat=dfx.SaveAt(ts=ts, fn=save) if summary else dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=TOL, atol=TOL),
        max_steps=100_000,
    )
    return sol.ys, sol.stats["num_steps"]


def library_flow(model, data, ts, t1=T1, loss=regression, tol=(TOL, TOL)):
    controller = dfx.PIDController(rtol=tol[0], atol=tol[1])
    return flows.euclidean_flow(
        model,
        loss,
        0.0,
        t1,
        args=data,
        saveat=flows.SaveAt(ts=ts),
        stepsize_controller=controller,
    )


def _flow_problem(kind, size, key):
    kmodel, kx, ky = jax.random.split(key, 3)
    if kind == "TwoLayerLinear":
        n, r, m = size
        model = models.TwoLayerLinear.relaxed_balanced(kmodel, n, r, m, 0.5)
        n_in, n_out = m, n
    else:
        model = models.DeepLinear.random(kmodel, size)
        n_in, n_out = size[0], size[-1]
    num_samples = 20
    data = (
        jax.random.normal(kx, (n_in, num_samples)),
        jax.random.normal(ky, (n_out, num_samples)),
    )
    return model, data


def _flow_case(index: int, kind: str, size: tuple, quick: bool) -> list[Row]:
    name = "2 euclidean_flow"
    ts = jnp.linspace(0.0, T1, NUM_TIMES)
    model, data = _flow_problem(kind, size, jax.random.key(10 * index))
    D = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    label = f"{kind}{size} D={D:,}"
    say(f"[{name}] {label}, t1={T1:g}, {NUM_TIMES} save times, rtol=atol={TOL:g}")

    variants = {
        "library": lambda: library_flow(model, data, ts),
        "hand": lambda: hand_flow(model, data, ts),
    }
    if not quick:  # one more compilation per case; skipped to keep --quick short
        variants["hand+summary"] = lambda: hand_flow(model, data, ts, True)
    times = time_calls(variants, repeats=7 if quick else 9)
    ratio = times["library"] / times["hand"]
    say(
        f"  euclidean_flow {fmt_seconds(times['library'])}, hand-written "
        f"{fmt_seconds(times['hand'])}: ratio {ratio:.2f} (target ≤ 1.3: "
        f"{'met' if ratio <= 1.3 else 'not met'}), difference "
        f"{fmt_seconds(times['library'] - times['hand'])} per call"
    )
    rows = [
        Row(name, f"problem: {label}", ""),
        Row(name, "euclidean_flow, per call", fmt_seconds(times["library"])),
        Row(name, "hand-written diffeqsolve (saves θ), per call", fmt_seconds(times["hand"])),
        Row(
            name,
            "overhead ratio euclidean_flow / hand-written",
            f"{ratio:.2f}",
            "≤ 1.3",
            verdict(ratio <= 1.3),
        ),
    ]
    if "hand+summary" in times:
        like = times["library"] / times["hand+summary"]
        fixed = times["library"] - times["hand+summary"]
        say(
            f"  hand-written saving the same summary (z, loss, laws): "
            f"{fmt_seconds(times['hand+summary'])}; ratio like for like {like:.2f}, "
            f"difference {fmt_seconds(fixed)} per call"
        )
        rows += [
            Row(name, "hand-written, saving z, loss, laws too", fmt_seconds(times["hand+summary"])),
            Row(
                name,
                "ratio, like for like (same saved summary)",
                f"{like:.2f}",
                "≤ 1.3",
                verdict(like <= 1.3),
            ),
            Row(name, "difference, like for like, per call", fmt_seconds(fixed), "", "info"),
        ]

    # Same trajectory: equal step counts, and z = φ(θ) at the save times.
    sol = library_flow(model, data, ts)
    thetas, hand_steps = hand_flow(model, data, ts)
    _, static = eqx.partition(model, eqx.is_inexact_array)
    z_hand = jax.vmap(lambda p: eqx.combine(p, static).lift())(thetas)
    deviation = float(jnp.max(jnp.abs(sol.zs - z_hand)) / jnp.max(jnp.abs(z_hand)))
    steps, hand_steps = int(sol.stats["num_steps"]), int(hand_steps)
    other_model, _ = _flow_problem(kind, size, jax.random.key(10 * index + 1))
    recompiles = compiles_during(lambda: library_flow(other_model, data, ts))
    say(
        f"  steps {steps} vs {hand_steps}; max |Δz| / max |z| = {deviation:.1e}; XLA "
        f"compilations on a second call with another model of the same shape: {recompiles}"
        f"{'  <-- RECOMPILES' if recompiles else ''}"
    )
    rows += [
        Row(
            name,
            "steps euclidean_flow / hand-written",
            f"{steps} / {hand_steps}",
            "equal",
            verdict(steps == hand_steps),
        ),
        Row(
            name,
            "max |z_lib - φ(θ_hand)| / max |z|",
            f"{deviation:.1e}",
            "≲ 1e-12",
            verdict(deviation <= 1e-12),
        ),
        Row(
            name,
            "compilations, 2nd call, new model same shape",
            str(recompiles),
            "0",
            verdict(recompiles == 0),
        ),
    ]
    if index == 0:
        rows += _cache_checks(model, data, ts, quick)
    return rows


def _cache_checks(model, data, ts, quick: bool) -> list[Row]:
    """XLA compilations of `euclidean_flow` calls that should hit the cache (after warm-up)."""
    name = "2 euclidean_flow"
    other_ts = jnp.linspace(0.0, 2 * T1, NUM_TIMES)
    other_data = (data[0] + 1.0, data[1] - 1.0)
    checks = {
        "other t1 and ts values": lambda: library_flow(model, data, other_ts, 2 * T1),
        "other tolerances": lambda: library_flow(model, data, ts, tol=(1e-7, 1e-9)),
        "other data (args)": lambda: library_flow(model, other_data, ts),
    }
    rows = []
    for what, call in checks.items():
        count = compiles_during(call)
        say(f"  XLA compilations on a call with {what}: {count}")
        rows.append(Row(name, f"compilations, {what}", str(count), "0", verdict(count == 0)))
    if not quick:  # informational, and a full compilation

        def closure_loss(z, args):  # the data baked in, not passed as `args`
            return regression(z, data)

        count = compiles_during(lambda: library_flow(model, None, ts, loss=closure_loss))
        say(
            f"  XLA compilations with a new closure as loss: {count} (expected: a new "
            f"function object is a new static argument of the jitted solve)"
        )
        rows.append(
            Row(name, "compilations, new closure as loss", str(count), "", "info (expected)")
        )
    return rows


def bench_flow(quick: bool) -> list[Row]:
    cases = [("TwoLayerLinear", (10, 5, 8)), ("DeepLinear", (8, 16, 16, 16, 10))]
    if not quick:
        cases.append(("DeepLinear", (50, 100, 100, 100, 50)))
    return [row for index, case in enumerate(cases) for row in _flow_case(index, *case, quick)]


# =========================================================================== 3. CLI


def bench_cli(quick: bool) -> list[Row]:
    name = "3 intrinsic run"
    figure = "`python -m intrinsic run` wall time"
    if importlib.util.find_spec("intrinsic._cli") is None:
        say(f"[{name}] skipped: CLI not available (no module intrinsic._cli)")
        return [Row(name, figure, "skipped: CLI not available", "< 20 s", "skipped")]
    say(f"[{name}] python -m intrinsic run --out TMPDIR (default example)")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import flows, manifolds, models, matplotlib.pyplot"],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
    )
    imports = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "intrinsic", "run", "--out", out],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        try:
            with open(Path(out) / "report.json") as fh:
                report = json.load(fh)
        except (OSError, ValueError):
            report = {}
    if proc.returncode != 0:
        tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        say(f"  failed with exit status {proc.returncode} after {elapsed:.1f} s:\n    {tail}")
        return [Row(name, figure, f"exit status {proc.returncode}", "< 20 s", "failed")]
    say(
        f"  {elapsed:.1f} s (interpreter + imports alone: {imports:.1f} s); target < 20 s: "
        f"{'met' if elapsed < 20 else 'not met'}"
    )
    rows = [
        Row(name, figure, f"{elapsed:.1f} s", "< 20 s", verdict(elapsed < 20)),
        Row(name, "of which: python + imports", f"{imports:.1f} s", "", "info"),
    ]
    for key, label in (
        ("euclidean_seconds", "Euclidean flow"),
        ("intrinsic_seconds", "intrinsic flow"),
    ):
        if isinstance(report.get(key), (int, float)):
            rows.append(
                Row(
                    name,
                    f"of which: {label} (compile + solve, from report.json)",
                    f"{report[key]:.1f} s",
                    "",
                    "info",
                )
            )
    return rows


# =========================================================================== driver


def main(quick: bool = False) -> list[Row]:
    """Run the three benchmarks; print figures as they come; return the table rows."""
    return run_benches((bench_metric, bench_flow, bench_cli), quick)


if __name__ == "__main__":
    script_main(__doc__, main, probes={"metric": lambda c: _probe_metric(c["route"], c["widths"])})
