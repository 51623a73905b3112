"""The `intrinsic` command: run both flows on a built-in example and compare them.

This module imports only the standard library: `--help`, `list` and argument errors answer at
once; JAX, the library and the examples are imported by the command that needs them.
"""

import json
import os
import sys
import time

from ._catalog import CATALOG, DEFAULT_EXAMPLE
from ._options import config_of, make_parser


def _run(args, parser, config) -> int:
    import diffrax as dfx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flows import SaveAt, euclidean_flow, intrinsic_flow, relative_deviation

    from ._examples import EXAMPLES

    example = EXAMPLES[args.example]
    try:
        model, loss, K = example.build(config)
    except ValueError as e:
        parser.exit(2, f"intrinsic run: error: {e}\n")
    ts = jnp.linspace(0.0, config["t1"], args.num_times)
    show = sys.stderr.isatty() and not args.no_progress
    options = dict(
        saveat=SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=args.rtol, atol=args.atol),
        max_steps=args.max_steps,
        progress_meter=dfx.TqdmProgressMeter() if show else dfx.NoProgressMeter(),
        throw=False,
    )
    start = time.perf_counter()
    euc = euclidean_flow(model, loss, 0.0, config["t1"], **options)
    euc_time = time.perf_counter() - start
    start = time.perf_counter()
    intr = intrinsic_flow(K, loss, 0.0, config["t1"], model.lift(), **options)
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
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, example in CATALOG.items():
            mark = " (default)" if name == DEFAULT_EXAMPLE else ""
            defaults = ", ".join(f"{k}={v}" for k, v in example.defaults.items())
            print(f"{name}{mark}\n    {example.description}\n    defaults: {defaults}")
        return 0
    if args.command == "sweep":
        from ._sweep import request_devices

        request_devices(args.devices)  # before JAX starts its backend
    config = None
    if args.command in ("run", "sweep", "analyze") and args.example in CATALOG:
        # Options that do not fit the example are argument errors: reported before JAX loads.
        try:
            config = config_of(args, CATALOG[args.example])
        except ValueError as e:
            parser.exit(2, f"intrinsic {args.command}: error: {e}\n")
    # The command, not the library, chooses the precision, and only for its own duration
    # (no global state left behind when `main` is called from Python).
    with _precision(args.precision if args.command == "run" else 64):
        if args.command == "analyze":
            return _analyze(args, parser, config)
        if args.command == "sweep":
            return _sweep(args, parser, config)
        if args.command == "reproduce":
            from ._reproduce import reproduce

            return reproduce(args.quick, args.out)
        return _run(args, parser, config)


def _precision(bits: int):
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(bits == 64)
    from jax.experimental import disable_x64, enable_x64  # older JAX

    return enable_x64() if bits == 64 else disable_x64()


def _sweep(args, parser, config) -> int:
    from ._examples import EXAMPLES
    from ._sweep import format_sweep, parse_param, sweep

    example = EXAMPLES[args.example]
    try:
        name, values = parse_param(args.param)
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


def _analyze(args, parser, config) -> int:
    import jax

    from ._analyze import analyze, format_report, load_factorization
    from ._examples import EXAMPLES

    key = jax.random.key(args.seed)
    try:
        if args.example in EXAMPLES:
            example = EXAMPLES[args.example]
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
