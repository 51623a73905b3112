r"""Benchmark of the exact polynomial conservation laws (`manifolds._symbolic`).

    python benchmarks/bench_symbolic.py [--quick]     # or: python -m benchmarks [--quick]

For linear networks of widths $(n, r, m)$, as `models.TwoLayerLinear(n, r, m)` and as
`models.DeepLinear((m, r, n))` (the same architecture), it times
`polynomial_conservation_laws(model, 2)`: recovering $\varphi$ from JAX, assembling the sparse
integer system and its exact nullspace over $\mathbb{Q}$. It reports the number of laws (expected
$r(r+1)/2$) and two times: the first call in this process (it compiles the Taylor-coefficient
functions) and a warm call (median of 3; compiled functions are cached per model shape). The
reference is 6.45 s for the degree-2 laws of widths (4, 3, 4); the ratio is reference / time,
so above 1 means faster. The full run adds (5, 3, 5), `DeepLinear((3, 3, 3, 3))` (a cubic
lifting, 12 laws) and `symbolic_induced_metric` for (4, 3, 4).
Nothing is asserted: figures only.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import jax

import models
from manifolds._symbolic import polynomial_conservation_laws, symbolic_induced_metric

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (
    Row,
    fmt_seconds,
    say,
    script_main,
    verdict,  # noqa: E402,
)

jax.config.update("jax_enable_x64", True)

REFERENCE_S = 6.45  # degree-2 symbolic laws for linear widths (4, 3, 4)


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _timed(fn) -> tuple[object, float, float]:
    """`fn()`'s result, the first call's seconds, and the median of 3 warm calls."""
    cold, out = _seconds(fn)
    return out, cold, statistics.median(_seconds(fn)[0] for _ in range(3))


def _bench_laws(label: str, model, expected: int, reference: bool) -> list[Row]:
    result, cold, warm = _timed(lambda: polynomial_conservation_laws(model, 2))
    count = len(result.laws)
    name = f"symbolic laws {label}"
    say(
        f"[{name}] {count} laws (expected {expected}); first {fmt_seconds(cold)}, warm {fmt_seconds(warm)}"
    )
    rows = [
        Row(name, "number of degree-2 laws", str(count), str(expected), verdict(count == expected))
    ]
    if not reference:
        times = f"{fmt_seconds(cold)} / {fmt_seconds(warm)}"
        return rows + [Row(name, "time, first call / warm", times)]
    for kind, seconds in (("first call", cold), ("warm call", warm)):
        ratio = REFERENCE_S / seconds
        say(f"  {kind}: {ratio:.1f}× faster than the {REFERENCE_S} s reference")
        value = f"{fmt_seconds(seconds)} ({ratio:.1f}×)"
        target = f"≤ {REFERENCE_S} s"
        rows.append(
            Row(name, f"time, {kind} (ratio)", value, target, verdict(seconds <= REFERENCE_S))
        )
    return rows


def main(quick: bool = False) -> list[Row]:
    """Time the symbolic laws (and, in the full run, the symbolic metric); return table rows."""
    key = jax.random.key(0)
    rows = []
    for n, r, m in [(2, 2, 2), (4, 3, 4)] + ([] if quick else [(5, 3, 5)]):
        laws, reference = r * (r + 1) // 2, (n, r, m) == (4, 3, 4)
        model = models.TwoLayerLinear.random(key, n, r, m)
        rows += _bench_laws(f"two-layer {(n, r, m)}", model, laws, reference)
        model = models.DeepLinear.random(key, (m, r, n))
        rows += _bench_laws(f"deep-linear {(m, r, n)}", model, laws, reference)
    if not quick:  # a cubic lifting, and the symbolic metric
        rows += _bench_laws(
            "deep-linear (3, 3, 3, 3)", models.DeepLinear.random(key, (3,) * 4), 12, False
        )
        metric, cold, warm = _timed(
            lambda: symbolic_induced_metric(models.TwoLayerLinear.random(key, 4, 3, 4))
        )
        times = f"{fmt_seconds(cold)} / {fmt_seconds(warm)}"
        say(f"[symbolic metric two-layer (4, 3, 4)] {metric.shape}; {times}")
        rows.append(Row("symbolic metric two-layer (4, 3, 4)", "time, first call / warm", times))
    return rows


if __name__ == "__main__":
    script_main(__doc__, main)
