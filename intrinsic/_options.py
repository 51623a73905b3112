"""Options of the `intrinsic` command: argument types, the parser, example configurations.

Standard library only: the command parses its arguments before JAX is imported.
"""

import argparse

from ._catalog import CATALOG as EXAMPLES, DEFAULT_EXAMPLE


def _number(kind, *, positive):
    """An argparse type: `kind` (int or float), finite, and positive if asked."""
    noun = "integer" if kind is int else "finite number"
    what = f"a positive {noun}" if positive else ("an integer" if kind is int else f"a {noun}")

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or abs(value) == float("inf") or (positive and not value > 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, positive=True)
_positive_float = _number(float, positive=True)
_finite_float = _number(float, positive=False)
_integer = _number(int, positive=False)


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, got {text!r}") from None
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 2,5,1, got {text!r}")
    return widths


def _skip(text):
    try:
        i, j = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I:J (layer indices), got {text!r}") from None
    return (i, j)


def _example_options(parser):
    # The sizes and constants of the built-in examples (each applies to some of them).
    parser.add_argument("--n", type=_positive_int, help="output width n (or size of z)")
    parser.add_argument("--r", type=_positive_int, help="hidden width r (two-layer-linear)")
    parser.add_argument("--m", type=_positive_int, help="input width m (two-layer-linear)")
    parser.add_argument("--depth", type=_positive_int, help="number of layers L >= 2")
    parser.add_argument("--degree", type=_integer, help="polynomial degree of A(s) (neural-ode)")
    parser.add_argument("--lam", type=_finite_float, help="relaxed-balance constant λ")
    parser.add_argument("--scale", type=_positive_float, help="scale of the initialization")


def _relu_options(parser):
    parser.add_argument("--widths", type=_widths, help="ReLU layer widths, e.g. 2,5,1 (relu)")
    parser.add_argument(
        "--bias", action="store_true", default=None, help="hidden and output biases (relu)"
    )
    parser.add_argument(
        "--skip",
        type=_skip,
        action="append",
        metavar="I:J",
        help="connect every neuron of layer I to every neuron of layer J > I+1 (relu; "
        "repeatable; makes a ReLUDAG)",
    )
    parser.add_argument("--samples", type=_positive_int, help="number of data points (relu)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intrinsic",
        description="Intrinsic training dynamics: integrate the Euclidean gradient flow on "
        "the parameters θ and the intrinsic flow z' = -K(z)∇f(z) on z = φ(θ), and check "
        "that φ(θ(t)) = z(t).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="list the built-in examples")
    run = sub.add_parser(
        "run",
        help="run both flows on an example and report their agreement",
        description="Run the Euclidean and intrinsic flows on a built-in example; print a "
        "table over time and write DIR/report.json and DIR/flows.png.",
    )
    run.add_argument(
        "example",
        nargs="?",
        default=DEFAULT_EXAMPLE,
        choices=sorted(EXAMPLES),
        help=f"which example (default: {DEFAULT_EXAMPLE}); see `intrinsic list`",
    )
    _example_options(run)
    _relu_options(run)
    run.add_argument("--seed", type=int, help="random seed (default: the example's, else 0)")
    run.add_argument("--t1", type=_positive_float, help="final time of the flows")
    run.add_argument("--rtol", type=_positive_float, default=1e-10, help="default: 1e-10")
    run.add_argument("--atol", type=_positive_float, default=1e-10, help="default: 1e-10")
    run.add_argument("--max-steps", type=_positive_int, default=100_000, help="solver step budget")
    run.add_argument(
        "--num-times", type=_positive_int, default=11, help="rows of the table (default: 11)"
    )
    run.add_argument(
        "--precision", type=int, choices=(32, 64), default=64, help="float bits (default: 64)"
    )
    run.add_argument("--out", default="intrinsic-out", help="output directory")
    run.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars (shown on a terminal)"
    )
    sweep = sub.add_parser(
        "sweep",
        help="an ensemble of Euclidean flows over one swept parameter",
        description="Integrate the Euclidean flow of an example at every value of one "
        "parameter as one vmapped ensemble (optionally sharded over devices); print the "
        "end states and write DIR/sweep.json and DIR/sweep.png.",
    )
    sweep.add_argument("example", choices=sorted(EXAMPLES), help="which example")
    sweep.add_argument(
        "--param", required=True, metavar="NAME=START:STOP:NUM", help="e.g. lam=-1:1:101"
    )
    _example_options(sweep)
    sweep.add_argument("--t1", type=_positive_float, help="final time of the flows")
    sweep.add_argument("--seed", type=int, help="random seed (default: the example's, else 0)")
    sweep.add_argument(
        "--devices",
        type=_positive_int,
        help="shard the ensemble over this many devices (on CPU: simulated devices)",
    )
    sweep.add_argument(
        "--chunks", type=_positive_int, default=10, help="progress updates (default: 10)"
    )
    sweep.add_argument("--out", default="intrinsic-out", metavar="DIR", help="output directory")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    analyze = sub.add_parser(
        "analyze",
        help="conservation laws, Lie algebra, Frobenius, recoverability, kernel inclusion",
        description="Count and list the conservation laws of a factorization and decide "
        "whether its gradient flow is intrinsic at its initialization. EXAMPLE is a "
        "built-in example or `module:attribute` naming a models.AbstractFactorization "
        "(or a callable taking a JAX PRNG key and returning one).",
    )
    analyze.add_argument("example", nargs="?", default=DEFAULT_EXAMPLE, metavar="EXAMPLE")
    _example_options(analyze)
    _relu_options(analyze)
    analyze.add_argument("--t1", type=_positive_float, help=argparse.SUPPRESS)
    analyze.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    analyze.add_argument(
        "--init",
        choices=("example", "random"),
        default="example",
        help="the example's (relaxed-balanced) initialization, or a generic random one",
    )
    analyze.add_argument("--json", action="store_true", help="print the report as JSON")
    analyze.add_argument(
        "--no-symbolic", action="store_true", help="skip the SymPy list of the laws"
    )
    reproduce = sub.add_parser(
        "reproduce",
        help="check every claim of the theory numerically; a table of verdicts",
        description="Measure, for each claim of the theory (conservation-law counts, "
        "relaxed balance sufficient and necessary, closed forms against the Euclidean "
        "flow, reference values), the quantity that decides it; print a table (claim, "
        "configuration, measured, tolerance, verdict) and write DIR/claims.json and "
        "DIR/claims.png. Runs in float64; exits with status 1 if a claim fails.",
    )
    reproduce.add_argument(
        "--quick", action="store_true", help="only the first configuration of each claim"
    )
    reproduce.add_argument("--out", default="intrinsic-out", metavar="DIR", help="output directory")
    return parser


def config_of(args, example) -> dict:
    config = dict(example.defaults)
    keys = ("n", "r", "m", "depth", "degree", "lam", "scale", "t1", "widths", "bias", "skip")
    for key in (*keys, "samples"):
        value = getattr(args, key, None)
        if key == "skip" and value is not None:
            value = tuple(value)
        if value is not None:
            if key not in config:
                raise ValueError(f"option --{key} does not apply to example {example.name!r}")
            config[key] = value
    if "depth" in config and config["depth"] < 2:
        raise ValueError(f"--depth must be at least 2, got {config['depth']}")
    config["seed"] = config.get("seed", 0) if args.seed is None else args.seed
    return config
