"""Run every benchmark script and print one table.

    python -m benchmarks [--quick]

Each module `benchmarks/bench_*.py` provides `main(quick: bool) -> list[Row]`; it prints
its figures as it goes and returns rows for the table printed at the end.
"""

import argparse
import importlib
import pkgutil
import time

import benchmarks
from benchmarks._common import print_report


def _benchmark_modules():
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    return [importlib.import_module(f"benchmarks.{name}") for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for module in _benchmark_modules():
        rows += module.main(args.quick)
    print_report(rows, time.perf_counter() - start)


if __name__ == "__main__":
    main()
