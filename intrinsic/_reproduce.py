"""`intrinsic reproduce`: one numerical check per claim of the theory.

A claim is a statement of the theory, a function measuring the quantity that decides it on a
configuration, and a check of that quantity; the registry of claims is `intrinsic/_claims.py`.
`--quick` runs the first configuration of every claim, the full run all of them.
"""

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._report import json_ready

# ---------------------------------------------------------------------------------------
# Checks: how a measured quantity is judged. `expected` may depend on the configuration.


@dataclasses.dataclass(frozen=True)
class AtMost:
    bound: float

    def __call__(self, measured, config) -> bool:
        return bool(np.isfinite(measured) and measured <= self.bound)

    def describe(self, config) -> str:
        return f"≤ {self.bound:.0e}"


@dataclasses.dataclass(frozen=True)
class AtLeast:
    bound: float

    def __call__(self, measured, config) -> bool:
        return bool(np.isfinite(measured) and measured >= self.bound)

    def describe(self, config) -> str:
        return f"≥ {self.bound:.0e}"


@dataclasses.dataclass(frozen=True)
class Equals:
    """Exact equality (counts, verdicts); `expected` a value or a function of the config."""

    expected: Any

    def value(self, config):
        return self.expected(config) if callable(self.expected) else self.expected

    def __call__(self, measured, config) -> bool:
        return _plain(measured) == _plain(self.value(config))

    def describe(self, config) -> str:
        return f"= {_format(self.value(config))}"


@dataclasses.dataclass(frozen=True)
class Close:
    """Every entry within `atol` of `expected` (reference values)."""

    expected: tuple
    atol: float

    def __call__(self, measured, config) -> bool:
        diff = np.abs(np.asarray(measured, float) - np.asarray(self.expected, float))
        return bool(np.all(diff <= self.atol))

    def describe(self, config) -> str:
        return f"{_format(self.expected)} ± {self.atol:.0e}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim: `measure(**config)` returns the quantity that `check` judges.

    `configs[0]` runs with `--quick`, all of them otherwise.
    """

    name: str
    section: str
    quantity: str
    measure: Callable[..., Any]
    check: AtMost | AtLeast | Equals | Close
    configs: tuple[dict, ...]


# ---------------------------------------------------------------------------------------
# Running them.


def _plain(x):
    """JSON-ready Python values (tuples become lists, NumPy scalars numbers)."""
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)) or (hasattr(x, "shape") and x.shape == ()):
        return float(x)
    return x


def _format(x) -> str:
    x = _plain(x)
    if isinstance(x, list):
        return "(" + ", ".join(_format(v) for v in x) + ")"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"
    return str(x)


def _describe_config(config: dict) -> str:
    show = lambda v: str(tuple(v)) if isinstance(v, list) else str(v)  # JSON lists were tuples
    return ", ".join(f"{k}={show(v)}" for k, v in config.items()) or "-"


def evaluate(claims, *, quick: bool = False, stream=None) -> list[dict]:
    """Measure every claim on its configurations (the first one only if `quick`).

    Returns one JSON-ready row per (claim, configuration); `stream` (a file) gets each
    row of the table as soon as it is measured. A measurement that raises is an `error`.
    """
    runs = [(c, config) for c in claims for config in (c.configs[:1] if quick else c.configs)]
    widths = _widths(runs)
    if stream is not None:
        print(_header(widths), file=stream, flush=True)
    rows = []
    for claim, config in runs:
        start = time.perf_counter()
        try:
            measured = _plain(claim.measure(**config))
            verdict = "pass" if claim.check(measured, config) else "FAIL"
        except Exception as e:  # a claim that cannot be measured is not verified
            measured, verdict = f"{type(e).__name__}: {e}", "ERROR"
        row = {
            "claim": claim.name,
            "section": claim.section,
            "configuration": _plain(config),
            "quantity": claim.quantity,
            "measured": measured,
            "tolerance": claim.check.describe(config),
            "verdict": verdict,
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        if stream is not None:
            print(_row_line(row, widths), file=stream, flush=True)
    return rows


_COLUMNS = ("claim", "configuration", "measured", "tolerance", "verdict")


def _widths(runs) -> tuple[int, ...]:
    # Everything but the measured value is known before measuring: align on it.
    def widest(cells, least):
        return max([least, *(len(c) for c in cells)])

    return (
        widest([c.name for c, _ in runs], 5),
        widest([_describe_config(config) for _, config in runs], 13),
        28,
        widest([c.check.describe(config) for c, config in runs], 9),
        7,
    )


def _header(widths) -> str:
    line = " ".join(f"{n:<{w}}" for n, w in zip(_COLUMNS, widths)).rstrip()
    return line + "\n" + "-" * len(line)


def _row_line(row, widths) -> str:
    measured = row["measured"]
    measured = _format(measured) if row["verdict"] != "ERROR" else measured[:80]
    cells = (
        row["claim"],
        _describe_config(row["configuration"]),
        measured,
        row["tolerance"],
        row["verdict"],
    )
    return " ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The claims decided by a bound, as measured value against tolerance on a log scale.
    numeric = [r for r in rows if isinstance(r["measured"], float) and r["tolerance"][0] in "≤≥"]
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(numeric) + 1.5), layout="constrained")
    for i, row in enumerate(numeric):
        color = "C2" if row["verdict"] == "pass" else "C3"
        ax.plot([float(row["tolerance"][2:])], [i], "k|", markersize=14)
        ax.plot([max(row["measured"], 1e-18)], [i], "o", color=color)  # 0 on a log axis
    labels = [f"{r['claim']} [{_describe_config(r['configuration'])}]" for r in numeric]
    ax.set_yticks(range(len(numeric)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set(xlabel="measured (dot; green = pass) against tolerance (bar)")
    ax.set_title("intrinsic reproduce: claims decided by a bound")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reproduce(quick: bool, out: str, claims: tuple[Claim, ...] | None = None) -> int:
    """Run the claims (default: all of `intrinsic/_claims.py`), print the table, write `out/claims.json` and
    `out/claims.png`; return the exit status (1 if a claim fails)."""
    mode = "quick (first configuration of each claim)" if quick else "full"
    print(f"intrinsic reproduce, {mode}, float64", flush=True)
    start = time.perf_counter()
    if claims is None:
        from ._claims import CLAIMS as claims
    rows = evaluate(claims, quick=quick, stream=sys.stdout)
    seconds = time.perf_counter() - start
    failed = [r for r in rows if r["verdict"] != "pass"]
    os.makedirs(out, exist_ok=True)
    report = {
        "quick": quick,
        "precision": 64,
        "seconds": seconds,
        "passed": len(rows) - len(failed),
        "failed": len(failed),
        "claims": rows,
    }
    json_path, figure_path = os.path.join(out, "claims.json"), os.path.join(out, "claims.png")
    with open(json_path, "w") as fh:
        json.dump(json_ready(report), fh, indent=2, ensure_ascii=False, allow_nan=False)
    _plot(rows, figure_path)
    print(
        f"{report['passed']} of {len(rows)} checks pass in {seconds:.1f} s; wrote {json_path} "
        f"and {figure_path}"
    )
    for row in failed:
        print(
            f"error: claim {row['claim']!r} [{_describe_config(row['configuration'])}]: "
            f"{row['verdict']}, measured {row['measured']}",
            file=sys.stderr,
        )
    return 1 if failed else 0
