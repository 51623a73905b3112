"""The `intrinsic` command: run both flows on a built-in example and compare them."""

import argparse
import json
import os
import sys
import time


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


def _parser():
    from ._examples import DEFAULT_EXAMPLE, EXAMPLES

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
    run.add_argument("--n", type=_positive_int, help="output width n (or size of z)")
    run.add_argument("--r", type=_positive_int, help="hidden width r (two-layer-linear)")
    run.add_argument("--m", type=_positive_int, help="input width m (two-layer-linear)")
    run.add_argument("--depth", type=_positive_int, help="number of layers L >= 2")
    run.add_argument("--degree", type=_integer, help="polynomial degree of A(s) (neural-ode)")
    run.add_argument("--lam", type=_finite_float, help="relaxed-balance constant λ")
    run.add_argument("--scale", type=_positive_float, help="scale of the initialization")
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
    for name in ("n", "r", "m", "depth"):
        sweep.add_argument(f"--{name}", type=_positive_int, help=f"size {name} of the example")
    sweep.add_argument("--degree", type=_integer, help="polynomial degree of A(s) (neural-ode)")
    sweep.add_argument("--lam", type=_finite_float, help="relaxed-balance constant λ")
    sweep.add_argument("--scale", type=_positive_float, help="scale of the initialization")
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
    for name in ("n", "r", "m", "depth"):
        analyze.add_argument(f"--{name}", type=_positive_int, help=f"size {name} of the example")
    analyze.add_argument("--degree", type=_integer, help="polynomial degree of A(s) (neural-ode)")
    analyze.add_argument("--lam", type=_finite_float, help="relaxed-balance constant λ")
    _relu_options(analyze)
    analyze.add_argument("--scale", type=_positive_float, help="scale of the initialization")
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


def _config(args, example):
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


def _run(args, parser) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ._euclidean import euclidean_flow
    from ._examples import EXAMPLES
    from ._intrinsic import intrinsic_flow
    from ._solution import relative_deviation

    example = EXAMPLES[args.example]
    try:
        config = _config(args, example)
        model, loss, K = example.build(config)
    except ValueError as e:
        parser.exit(2, f"intrinsic run: error: {e}\n")
    ts = jnp.linspace(0.0, config["t1"], args.num_times)
    options = dict(
        ts=ts,
        rtol=args.rtol,
        atol=args.atol,
        max_steps=args.max_steps,
        progress=sys.stderr.isatty() and not args.no_progress,
        throw=False,
    )
    start = time.perf_counter()
    euc = euclidean_flow(model, loss, config["t1"], **options)
    euc_time = time.perf_counter() - start
    start = time.perf_counter()
    intr = intrinsic_flow(K, loss, model.lift(), config["t1"], **options)
    intr_time = time.perf_counter() - start

    failed = [(name, s.message) for name, s in (("euclidean", euc), ("intrinsic", intr))]
    failed = [(name, msg) for name, msg in failed if msg]
    deviation = np.asarray(relative_deviation(euc, intr))
    drift = np.maximum.accumulate(
        np.max(
            np.stack(
                [
                    np.abs(np.asarray(h) - np.asarray(h[:1])).reshape(len(ts), -1).max(axis=1)
                    for h in jax.tree.leaves(euc.conserved)
                ]
            ),
            axis=0,
        )
    )
    num_params = sum(
        x.size for x in jax.tree.leaves(model) if jnp.issubdtype(x.dtype, jnp.floating)
    )
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(model.lift()))
    print(f"intrinsic run {example.name}: {example.description}")
    print(
        "config: "
        + ", ".join(f"{k}={v}" for k, v in config.items())
        + f" | D = {num_params} parameters, d = {dim} lifted coordinates"
    )
    header = f"{'t':>9} {'loss (θ flow)':>15} {'loss (z flow)':>15} {'rel. deviation':>15} {'cons. drift':>12}"
    print(header)
    print("-" * len(header))
    for i, t in enumerate(np.asarray(ts)):
        print(
            f"{t:9.3f} {float(euc.losses[i]):15.6e} {float(intr.losses[i]):15.6e} "
            f"{deviation[i]:15.3e} {drift[i]:12.3e}"
        )
    report = {
        "example": example.name,
        "config": config,
        "num_parameters": int(num_params),
        "lifted_dimension": dim,
        "precision": args.precision,
        "rtol": args.rtol,
        "atol": args.atol,
        "ts": np.asarray(ts).tolist(),
        "euclidean_losses": np.asarray(euc.losses).tolist(),
        "intrinsic_losses": np.asarray(intr.losses).tolist(),
        "relative_deviation": deviation.tolist(),
        "conservation_drift": drift.tolist(),
        "max_relative_deviation": float(np.max(deviation)),
        "max_conservation_drift": float(drift[-1]),
        "euclidean_steps": int(euc.stats["num_steps"]),
        "intrinsic_steps": int(intr.stats["num_steps"]),
        "euclidean_seconds": euc_time,
        "intrinsic_seconds": intr_time,
        "failures": dict(failed),
        "euclidean_event_times": None
        if euc.event_times is None
        else np.asarray(euc.event_times).tolist(),
        "intrinsic_event_times": None
        if intr.event_times is None
        else np.asarray(intr.event_times).tolist(),
    }
    os.makedirs(args.out, exist_ok=True)
    report_path = os.path.join(args.out, "report.json")
    with open(report_path, "w") as fh:
        json.dump(report, fh, indent=2)
    figure_path = os.path.join(args.out, "flows.png")
    _plot(np.asarray(ts), report, figure_path)
    print(
        f"max relative deviation {report['max_relative_deviation']:.3e}, max conservation "
        f"drift {report['max_conservation_drift']:.3e}; Euclidean flow {euc_time:.2f} s "
        f"({report['euclidean_steps']} steps), intrinsic flow {intr_time:.2f} s "
        f"({report['intrinsic_steps']} steps)"
    )
    if euc.event_times is not None:
        print(
            "pattern changes (activation or weight sign) at t = "
            + (", ".join(f"{t:.4f}" for t in report["euclidean_event_times"]) or "none")
            + " (θ flow); "
            + (", ".join(f"{t:.4f}" for t in report["intrinsic_event_times"]) or "none")
            + " (z flow)"
        )
    print(f"wrote {report_path} and {figure_path}")
    for name, msg in failed:
        print(f"error: the {name} flow failed: {msg}", file=sys.stderr)
    return 1 if failed else 0


def _plot(ts, report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    ax1.semilogy(ts, report["euclidean_losses"], "o-", label="Euclidean flow on θ")
    ax1.semilogy(ts, report["intrinsic_losses"], "x--", label="intrinsic flow on z")
    ax1.set(xlabel="t", ylabel="loss f(z(t))", title="Training loss")
    ax1.legend()
    # Both curves are exactly 0 at t0 by construction: plot from the first step on.
    floor = np.finfo(float).tiny
    for key, style, label in (
        ("relative_deviation", "o-", "‖φ(θ(t)) − z(t)‖ / max‖z‖"),
        ("conservation_drift", "s-", "max |h(θ(t)) − h(θ₀)|"),
    ):
        ax2.semilogy(ts[1:], np.maximum(report[key][1:], floor), style, label=label)
    ax2.set(xlabel="t", title="Agreement and conservation")
    ax2.legend()
    fig.suptitle(f"intrinsic run {report['example']}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    """Entry point of the `intrinsic` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        from ._examples import DEFAULT_EXAMPLE, EXAMPLES

        for name, example in EXAMPLES.items():
            mark = " (default)" if name == DEFAULT_EXAMPLE else ""
            defaults = ", ".join(f"{k}={v}" for k, v in example.defaults.items())
            print(f"{name}{mark}\n    {example.description}\n    defaults: {defaults}")
        return 0
    if args.command == "sweep":
        from ._sweep import request_devices

        request_devices(args.devices)  # before JAX starts its backend
    # The command, not the library, chooses the precision, and only for its own duration
    # (no global state left behind when `main` is called from Python).
    with _precision(args.precision if args.command == "run" else 64):
        if args.command == "analyze":
            return _analyze(args, parser)
        if args.command == "sweep":
            return _sweep(args, parser)
        if args.command == "reproduce":
            from ._reproduce import reproduce

            return reproduce(args.quick, args.out)
        return _run(args, parser)


def _precision(bits: int):
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(bits == 64)
    from jax.experimental import disable_x64, enable_x64  # older JAX

    return enable_x64() if bits == 64 else disable_x64()


def _sweep(args, parser) -> int:
    from ._examples import EXAMPLES
    from ._sweep import format_sweep, parse_param, sweep

    example = EXAMPLES[args.example]
    try:
        name, values = parse_param(args.param)
        config = _config(args, example)
        report = sweep(
            example,
            config,
            name,
            values,
            devices=args.devices,
            out=args.out,
            chunks=args.chunks,
            progress=sys.stderr.isatty() and not args.no_progress,
        )
    except ValueError as e:
        parser.exit(2, f"intrinsic sweep: error: {e}\n")
    print(f"intrinsic sweep {example.name} over {name} ({len(values)} values)")
    print(format_sweep(report))
    failed = [r for r in report["rows"] if not r["succeeded"]]
    print(f"wrote {os.path.join(args.out, 'sweep.json')} and {os.path.join(args.out, 'sweep.png')}")
    if failed:
        print(f"error: {len(failed)} flow(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _analyze(args, parser) -> int:
    import jax

    from ._analyze import analyze, format_report, load_factorization
    from ._examples import EXAMPLES

    key = jax.random.key(args.seed)
    try:
        if args.example in EXAMPLES:
            example = EXAMPLES[args.example]
            config = _config(args, example)
            if args.init == "random":
                model = example.build_random(config)
            else:
                model = example.build(config)[0]
        else:
            model = load_factorization(args.example, key)
    except ValueError as e:
        parser.exit(2, f"intrinsic analyze: error: {e}\n")
    report = analyze(model, key=key, symbolic=False if args.no_symbolic else None)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
