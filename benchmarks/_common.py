"""Shared helpers for the benchmark scripts: timing, isolated peak memory, compile counting,
and the results table.

Nothing here asserts on timings: benchmarks report figures, they are not tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax

REPO_ROOT = Path(__file__).resolve().parents[1]

# The duration event JAX records once per XLA compilation (not per trace or per dispatch).
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the results table."""

    benchmark: str
    figure: str
    value: str
    target: str = ""
    verdict: str = ""


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


# --------------------------------------------------------------------------- timing


def _time_run(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_calls(
    fns: Mapping[str, Callable[[], object]], *, repeats: int = 7, min_run_s: float = 0.05
) -> dict[str, float]:
    """Median wall-clock seconds per call of each zero-argument `fn`, after a warm-up call.

    Each call is followed by `jax.block_until_ready`. Calls shorter than `min_run_s` are
    batched (as `timeit.autorange` does) so the clock resolution does not matter. The
    functions are timed interleaved, repeat by repeat, so that a change of machine load
    during the benchmark affects all of them alike and their ratio stays meaningful.
    """
    numbers = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn())  # warm-up: compilation and first dispatch
        number = 1
        while (elapsed := _time_run(fn, number)) < min_run_s and number < 100_000:
            number *= max(2, min(10, math.ceil(1.2 * min_run_s / max(elapsed, 1e-9))))
        numbers[name] = number
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_time_run(fn, numbers[name]) / numbers[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def time_call(fn: Callable[[], object], **kwargs) -> float:
    """Median seconds per call of one zero-argument function (see `time_calls`)."""
    return time_calls({"fn": fn}, **kwargs)["fn"]


# --------------------------------------------------------------------------- compiles


class CompileCounter:
    """Count XLA compilations inside a `with` block (via `jax.monitoring`)."""

    def __init__(self):
        self.count = 0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            self.count += 1

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)


def compiles_during(fn: Callable[[], object]) -> int:
    """How many XLA compilations one call of `fn` triggers."""
    with CompileCounter() as counter:
        jax.block_until_ready(fn())
    return counter.count


# --------------------------------------------------------------------------- memory
#
# Peak memory is measured in a fresh subprocess per measurement, so that XLA's caches,
# allocator pools and earlier benchmarks cannot pollute it. Inside the subprocess the
# computation is compiled first, then the process's resident-set high-water mark is reset
# to the current RSS (Linux: `/proc/self/clear_refs`), the compiled computation runs once,
# and the increase of the high-water mark is its peak working memory.
#
# The high-water mark is read as `VmHWM` from `/proc/self/status` rather than from
# `getrusage(RUSAGE_SELF).ru_maxrss`: on Linux, a child started by fork/vfork + exec
# inherits the parent's peak in `ru_maxrss` (a child of a 1.5 GB Python process reports
# ru_maxrss ≥ 1.5 GB at startup), so `ru_maxrss` deltas read zero whenever the computation
# needs less than the parent once did. `ru_maxrss` is the fallback where /proc is missing.


def _high_water_mark_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_of(run: Callable[[], object]) -> dict:
    """In the current (fresh) process: the peak RSS increase while `run()` executes.

    `run` must already be compiled (warm-up would set the high-water mark itself).
    """
    reset = _reset_high_water_mark()
    before = _high_water_mark_bytes()
    jax.block_until_ready(run())
    return {"peak_bytes": _high_water_mark_bytes() - before, "hwm_reset": reset}


def measure_in_subprocess(module: str, probe: str, config: dict, *, timeout: float = 600) -> dict:
    """Run `python -m module --memory-probe PROBE --config JSON` and parse its JSON reply.

    The probe prints one JSON object as its last line of output (see `peak_memory_of`).
    """
    command = [
        sys.executable,
        "-m",
        module,
        "--memory-probe",
        probe,
        "--config",
        json.dumps(config),
    ]
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"memory probe {probe!r} failed:\n" + "\n".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- formatting


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def environment_lines() -> list[str]:
    import diffrax
    import equinox
    import lineax

    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (jax, equinox, diffrax, lineax))
    cpu = platform.processor() or platform.machine()
    return [
        f"machine: {platform.platform()} ({cpu}), {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, JAX backend {jax.default_backend()} "
        f"({len(jax.devices())} device(s))",
        f"versions: {versions}; float64 {'on' if jax.config.jax_enable_x64 else 'off'}",
    ]


def format_table(rows: Sequence[Row]) -> str:
    header = Row("benchmark", "figure", "value", "target", "verdict")
    cells = [dataclasses.astuple(r) for r in (header, *rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    line = lambda c: "  ".join(s.ljust(w) for s, w in zip(c, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def print_report(rows: Sequence[Row], elapsed: float | None = None) -> None:
    print()
    for text in environment_lines():
        print(text)
    if elapsed is not None:
        print(f"total benchmark time: {elapsed:.1f} s")
    print()
    print(format_table(rows))


# --------------------------------------------------------------------------- script entry


def say(text: str) -> None:
    """Print a figure as soon as it is measured."""
    print(text, flush=True)


def run_benches(benches: Sequence[Callable[[bool], list[Row]]], quick: bool) -> list[Row]:
    """Run each `bench(quick)` in turn, saying how long it took; return all their rows."""
    rows = []
    for bench in benches:
        start = time.perf_counter()
        rows += bench(quick)
        say(f"  ({bench.__name__} took {time.perf_counter() - start:.1f} s)")
    return rows


def script_main(
    doc: str,
    main: Callable[[bool], list[Row]],
    probes: Mapping[str, Callable[[dict], dict]] | None = None,
) -> None:
    """The command line of a benchmark script: `[--quick]` runs `main` and prints the table;
    `--memory-probe NAME --config JSON` (the subprocess side of `measure_in_subprocess`)
    prints the JSON reply of `probes[NAME](config)`."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--memory-probe", choices=sorted(probes or ()), help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(probes[args.memory_probe](json.loads(args.config))))
        return
    start = time.perf_counter()
    rows = main(args.quick)
    print_report(rows, time.perf_counter() - start)
