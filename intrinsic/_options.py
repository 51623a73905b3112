"""Options of the `intrinsic` command: argument types, the parser, example configurations.

Standard library only: the command parses its arguments before JAX is imported.
"""

import argparse
import math
import os

from ._catalog import CATALOG as EXAMPLES, DEFAULT_EXAMPLE

# The most each option accepts. Not limits of the theory: bounds that keep one command within
# minutes and a few GB on a laptop CPU, and refuse a typo (an extra zero) before any work.
LIMITS = dict(
    n=64,
    r=64,
    m=64,
    depth=16,
    degree=30,
    samples=10_000,
    width=64,
    layers=8,
    paths=100_000,
    lam=1e3,
    scale=1e3,
    t1=1e4,
    max_steps=10_000_000,
    num_times=10_000,
    chunks=10_000,
    devices=256,
    seed=2**32 - 1,
    max_depth=32,
)
# Sweep members: one vmapped ensemble (a value parameter), or one flow after another.
MAX_ENSEMBLE = 10_000
MAX_LOOP = 200
# Machine epsilon of each `--precision`; `--rtol` must be at least RTOL_EPS_FACTOR of it.
EPS = {32: 2.0**-23, 64: 2.0**-52}
RTOL_EPS_FACTOR = 10
# `intrinsic analyze neural-ode`: each bracket level nests jvps through the depth solve, and
# its compiled program grows about 3x per level (level 2: about 30 s at D = 99 on a CPU;
# unbounded, the default run reached 9 GB after 23 minutes). So the levels are capped, and
# the model's size too.
NEURAL_ODE_DEPTH = 1
NEURAL_ODE_MAX_DEPTH = 2
NEURAL_ODE_MAX_PARAMETERS = 200
DEFAULT_TOLERANCE = {32: 1e-5, 64: 1e-10}


def _number(kind, *, low=None, high=None, open_low=False, open_high=False):
    """An argparse type: `kind` (int or float), finite, within [low, high] (or open ends)."""
    noun = "integer" if kind is int else "finite number"

    def g(v):
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low == 1 and kind is int and high is not None:
        what = f"a positive integer (at most {g(high)})"
    elif low == 0 and open_low and high is not None and not open_high:
        what = f"a positive {noun} (at most {g(high)})"
    elif low is not None and high is not None:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        what = f"{'an' if kind is int else 'a'} {noun} in {left}{g(low)}, {g(high)}{right}"
    else:
        what = f"{'an' if kind is int else 'a'} {noun}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            basic = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(
                f"expected {basic}, got {text!r} (allowed: {what})"
            ) from None
        bad = value != value or abs(value) == float("inf")
        if low is not None:
            bad = bad or value < low or (open_low and value == low)
        if high is not None:
            bad = bad or value > high or (open_high and value == high)
        if bad:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.what = what
    return parse


def _size(name):
    return _number(int, low=1, high=LIMITS[name])


_TYPES = dict(
    n=_size("n"),
    r=_size("r"),
    m=_size("m"),
    depth=_number(int, low=2, high=LIMITS["depth"]),
    degree=_number(int, low=0, high=LIMITS["degree"]),
    samples=_size("samples"),
    lam=_number(float, low=-LIMITS["lam"], high=LIMITS["lam"]),
    scale=_number(float, low=0, high=LIMITS["scale"], open_low=True),
    t1=_number(float, low=0, high=LIMITS["t1"], open_low=True),
    seed=_number(int, low=0, high=LIMITS["seed"]),
    tolerance=_number(float, low=0, high=1, open_low=True, open_high=True),
    max_steps=_size("max_steps"),
    num_times=_number(int, low=2, high=LIMITS["num_times"]),
    chunks=_size("chunks"),
    devices=_size("devices"),
    max_depth=_number(int, low=0, high=LIMITS["max_depth"]),
)


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, got {text!r}") from None
    top = LIMITS["width"]
    if len(widths) < 3 or min(widths) < 1 or max(widths) > top or len(widths) > LIMITS["layers"]:
        raise argparse.ArgumentTypeError(
            f"expected 3 to {LIMITS['layers']} positive widths of at most {top} (inputs, "
            f"hidden layers, outputs) like 2,5,1, got {text!r}"
        )
    return widths


def _skip(text):
    try:
        i, j = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I:J (layer indices), got {text!r}") from None
    return (i, j)


def _example_options(parser):
    # The sizes and constants of the built-in examples (each applies to some of them).
    L = LIMITS
    parser.add_argument("--n", type=_TYPES["n"], help=f"output width n (or size of z); <= {L['n']}")
    parser.add_argument(
        "--r", type=_TYPES["r"], help=f"hidden width r (two-layer-linear); <= {L['r']}"
    )
    parser.add_argument(
        "--m", type=_TYPES["m"], help=f"input width m (two-layer-linear); <= {L['m']}"
    )
    parser.add_argument(
        "--depth", type=_TYPES["depth"], help=f"number of layers, 2 to {L['depth']}"
    )
    parser.add_argument(
        "--degree",
        type=_TYPES["degree"],
        help=f"polynomial degree of A(s), 0 to {L['degree']} (neural-ode)",
    )
    parser.add_argument(
        "--lam", type=_TYPES["lam"], help=f"relaxed-balance constant λ, |λ| <= {L['lam']:g}"
    )
    parser.add_argument(
        "--scale", type=_TYPES["scale"], help=f"scale of the initialization, in (0, {L['scale']:g}]"
    )


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
    parser.add_argument(
        "--samples",
        type=_TYPES["samples"],
        help=f"number of data points (relu); <= {LIMITS['samples']}",
    )


def _seed_option(parser, default_text, default=None):
    parser.add_argument(
        "--seed",
        type=_TYPES["seed"],
        default=default,
        help=f"random seed, 0 to {LIMITS['seed']} (default: {default_text})",
    )


def _t1_option(parser):
    parser.add_argument(
        "--t1", type=_TYPES["t1"], help=f"final time of the flows, in (0, {LIMITS['t1']:g}]"
    )


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
    _seed_option(run, "the example's, else 0")
    _t1_option(run)
    for name in ("rtol", "atol"):
        run.add_argument(
            f"--{name}",
            type=_TYPES["tolerance"],
            help="in (0, 1); default: 1e-10 (1e-5 with --precision 32); --rtol must be at "
            f"least {RTOL_EPS_FACTOR} machine epsilons of the precision",
        )
    run.add_argument(
        "--max-steps",
        type=_TYPES["max_steps"],
        default=100_000,
        help=f"solver step budget (default: 100000, at most {LIMITS['max_steps']})",
    )
    run.add_argument(
        "--num-times",
        type=_TYPES["num_times"],
        default=11,
        help=f"rows of the table, 2 to {LIMITS['num_times']} (default: 11)",
    )
    run.add_argument(
        "--precision", type=int, choices=(32, 64), default=64, help="float bits (default: 64)"
    )
    run.add_argument(
        "--out", default="intrinsic-out", metavar="DIR", help="output directory (checked first)"
    )
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
        "--param",
        required=True,
        metavar="NAME=START:STOP:NUM",
        help="e.g. lam=-1:1:101; NAME is a value of the model (lam, scale of the linear "
        f"examples: one vmapped ensemble, NUM <= {MAX_ENSEMBLE}) or changes the data or the "
        f"time span (seed, t1, the ReLU example's scale: one flow per member, NUM <= "
        f"{MAX_LOOP}); sizes (n, depth, ...) cannot be swept",
    )
    _example_options(sweep)
    _t1_option(sweep)
    _seed_option(sweep, "the example's, else 0")
    sweep.add_argument(
        "--devices",
        type=_TYPES["devices"],
        help="shard the ensemble over this many devices (on CPU: simulated devices; at most "
        f"{LIMITS['devices']})",
    )
    sweep.add_argument(
        "--chunks",
        type=_TYPES["chunks"],
        default=10,
        help=f"progress updates (default: 10, at most {LIMITS['chunks']})",
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
    analyze.add_argument("--t1", type=_TYPES["t1"], help=argparse.SUPPRESS)
    _seed_option(analyze, "0", default=0)
    analyze.add_argument(
        "--max-depth",
        type=_TYPES["max_depth"],
        help="bracket levels of the Lie algebra trace (default: until a level adds nothing; "
        f"neural-ode: {NEURAL_ODE_DEPTH}, at most {NEURAL_ODE_MAX_DEPTH}, since each level "
        "differentiates through the depth solve)",
    )
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
    """The example's configuration with the options given; `ValueError` for one that does
    not apply or does not fit the others (standard library only: before JAX loads)."""
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
    if "widths" in config:
        _check_relu(config)
    config["seed"] = config.get("seed", 0) if args.seed is None else args.seed
    return config


def _check_relu(config):
    widths, skip = tuple(config["widths"]), tuple(config["skip"])
    if len(widths) < 3:
        raise ValueError(f"--widths needs at least one hidden layer, got {widths}")
    for i, j in skip:
        if not 0 <= i < j - 1 < len(widths) - 1:
            raise ValueError(
                f"--skip {i}:{j}: need 0 <= i and i + 1 < j <= {len(widths) - 1} (layers "
                f"are numbered 0 = inputs to {len(widths) - 1} = outputs)"
            )
    # The path-lifting has one coordinate per input-output path: bound it from above (a
    # bias is one more input per layer; each skip at most doubles the paths).
    paths = 2 ** len(skip)
    for w in widths[:-1]:
        paths *= w + 1 if config["bias"] else w
    paths *= widths[-1]
    if paths > LIMITS["paths"]:
        raise ValueError(
            f"--widths {','.join(map(str, widths))}: up to {paths} paths (coordinates of z), "
            f"more than the {LIMITS['paths']} this command allows"
        )


def tolerances(args) -> tuple[float, float]:
    """`(rtol, atol)` of `intrinsic run`: the precision's defaults, and `--rtol` refused
    below `RTOL_EPS_FACTOR` machine epsilons (the steps could never meet it)."""
    rtol = DEFAULT_TOLERANCE[args.precision] if args.rtol is None else args.rtol
    atol = DEFAULT_TOLERANCE[args.precision] if args.atol is None else args.atol
    floor = RTOL_EPS_FACTOR * EPS[args.precision]
    if rtol < floor:
        raise ValueError(
            f"--rtol {rtol:g} is below what float{args.precision} resolves: it must be at least "
            f"{RTOL_EPS_FACTOR} machine epsilons, {floor:.2g}"
            + (" (or use --precision 64)" if args.precision == 32 else "")
        )
    return rtol, atol


def check_out(path: str) -> None:
    """Make `--out` and write a file in it, before any work: `ValueError` if that fails."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(
            f"--out {path!r}: cannot write there ({e.strerror or type(e).__name__}); "
            "give a writable directory"
        ) from None


def parse_param(spec: str) -> tuple[str, list[float]]:
    """`name=start:stop:num` → (name, the `num` evenly spaced values from start to stop)."""
    name, sep, rng = spec.partition("=")
    parts = rng.split(":")
    if not sep or not name or len(parts) != 3:
        raise ValueError(
            f"--param must look like name=start:stop:num (e.g. lam=-1:1:101), got {spec!r}"
        )
    try:
        start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(
            f"--param {spec!r}: start and stop must be numbers, num an integer"
        ) from None
    if not (math.isfinite(start) and math.isfinite(stop)) or num < 1:
        raise ValueError(f"--param {spec!r}: need finite start, stop and num >= 1")
    if num > MAX_ENSEMBLE:
        raise ValueError(f"--param {spec!r}: num = {num} members, at most {MAX_ENSEMBLE}")
    if num == 1:
        return name, [start]
    step = (stop - start) / (num - 1)
    return name, [start + i * step for i in range(num - 1)] + [stop]


def sweep_mode(example, config, name, values) -> str:
    """How `intrinsic sweep` runs `name` over `values`: `"ensemble"` (one vmap) or
    `"loop"` (one flow per member); `ValueError`, with the reason, if it cannot."""
    sweepable = sorted(example.values | example.data)
    if name not in config:
        raise ValueError(
            f"--param {name}: example {example.name!r} has no parameter {name!r}; it can "
            f"sweep {', '.join(sweepable)}"
        )
    if name not in sweepable:
        raise ValueError(
            f"--param {name}: {name} sets the shapes of the parameters or of the data, so the "
            f"members would not share one structure; example {example.name!r} can sweep "
            f"{', '.join(sweepable)} (run `intrinsic run --{name} ...` once per value instead)"
        )
    parse = _TYPES[name]
    integer = "integer" in parse.what
    for v in values:
        try:
            if integer and v != int(v):
                raise argparse.ArgumentTypeError
            parse(repr(int(v)) if integer else repr(v))
        except argparse.ArgumentTypeError:
            raise ValueError(
                f"--param {name}: every value must be {parse.what}, got {v:g}"
            ) from None
    if name in example.values:
        return "ensemble"
    if len(values) > MAX_LOOP:
        raise ValueError(
            f"--param {name}: {name} changes the data or the time span, so each member is "
            f"integrated on its own; at most {MAX_LOOP} members, got {len(values)}"
        )
    return "loop"
