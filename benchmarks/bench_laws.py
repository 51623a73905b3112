"""Number of conservation laws of deep linear networks: `lie_algebra_trace` against SageMath.

    python benchmarks/bench_laws.py [--quick]      (or all benchmarks: python -m benchmarks)

Each row is a `models.DeepLinear.random` network; `dim Lie` is dim Lie(W)(θ) at that θ and
`laws` = D − dim Lie, checked against the closed form Σ_hidden n(n+1)/2. `cold` includes
tracing and XLA compilation (every row has new shapes, so nothing is cached), `warm` is a
second call on the same model. The SageMath times are the symbolic Lie-algebra computation
of the conservation-laws paper (Marcotte, Gribonval, Peyré, NeurIPS 2023), as quoted to us;
the target is a speed-up of at least 100x on widths (2, 4, 5, 2, 2). The last row is the
largest net run: D = 7500 (under 60 s on 2 CPU cores), or D = 2000 with `--quick` (the whole
script then takes about 15-30 s).
"""

import sys
import time
from pathlib import Path

import jax

# Rank decisions need float64; the library itself follows the default dtype.
jax.config.update("jax_enable_x64", True)

import manifolds  # noqa: E402
import models  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import Row, fmt_seconds, script_main, verdict  # noqa: E402

SAGEMATH_SECONDS = {(2, 2, 2): 0.26, (5, 3, 5): 11.3, (4, 4, 4): 8.9, (2, 4, 5, 2, 2): 200.7}
TARGET_WIDTHS, TARGET_SPEEDUP = (2, 4, 5, 2, 2), 100.0
LARGEST = (50, 50, 50, 50)  # D = 7500, d = 2500
LARGEST_QUICK = (20, 20, 20, 20, 20, 20)  # D = 2000


def _timed(model):
    start = time.perf_counter()
    result = manifolds.lie_algebra_trace(model)
    return result, time.perf_counter() - start


def _speedup(reference, seconds) -> str:
    return "" if reference is None else f"{reference / seconds:.0f}x"


def main(quick: bool = False) -> list[Row]:
    """Print the table of laws and times; return rows for `python -m benchmarks`."""
    jax.numpy.zeros(1).block_until_ready()  # JAX start-up is not the first row's cost
    header = (
        f"{'architecture':<28}{'D':>6}{'dim Lie':>9}{'laws':>6}{'levels':>8}"
        f"{'cold':>10}{'warm':>10}{'SageMath':>10}{'x cold':>8}{'x warm':>8}"
    )
    print(header, "-" * len(header), sep="\n", flush=True)
    rows = []
    for widths in (*SAGEMATH_SECONDS, LARGEST_QUICK if quick else LARGEST):
        model = models.DeepLinear.random(jax.random.key(0), widths)
        result, cold = _timed(model)
        _, warm = _timed(model)
        closed_form = sum(n * (n + 1) // 2 for n in widths[1:-1])
        if not result.converged or result.num_conservation_laws != closed_form:
            raise AssertionError(f"{widths}: {result} disagrees with {closed_form} laws.")
        sage = SAGEMATH_SECONDS.get(widths)
        name = "DeepLinear" + str(widths).replace(" ", "")
        print(
            f"{name:<28}{result.num_parameters:>6}{result.dimension:>9}"
            f"{result.num_conservation_laws:>6}{len(result.dimensions_per_level) - 1:>8}"
            f"{fmt_seconds(cold):>10}{fmt_seconds(warm):>10}"
            f"{'' if sage is None else fmt_seconds(sage):>10}"
            f"{_speedup(sage, cold):>8}{_speedup(sage, warm):>8}",
            flush=True,
        )
        bench = f"laws {name}"
        counts = f"D={result.num_parameters}, dim Lie={result.dimension}, laws={closed_form}"
        rows.append(Row(bench, "D, dim Lie(W)(θ), laws (= closed form)", counts))
        rows.append(Row(bench, "time, cold / warm", f"{fmt_seconds(cold)} / {fmt_seconds(warm)}"))
        if sage is not None:
            target = f"≥ {TARGET_SPEEDUP:.0f}x" if widths == TARGET_WIDTHS else ""
            rows.append(
                Row(
                    bench,
                    f"speed-up vs SageMath {fmt_seconds(sage)}, cold / warm",
                    f"{_speedup(sage, cold)} / {_speedup(sage, warm)}",
                    target,
                    (
                        f"{verdict(sage / cold >= TARGET_SPEEDUP)} cold, "
                        f"{verdict(sage / warm >= TARGET_SPEEDUP)} warm"
                    )
                    if target
                    else "",
                )
            )
    return rows


if __name__ == "__main__":
    script_main(__doc__, main)
