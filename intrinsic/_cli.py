"""The `intrinsic` command: run both flows on a built-in example and compare them.

This module imports only the standard library: `--help`, `list` and argument errors answer at
once; JAX, the library and the examples are imported by the command that needs them.
"""

import json
import os
import sys
import time

from . import _options
from ._catalog import CATALOG, DEFAULT_EXAMPLE
from ._options import check_out, config_of, make_parser, parse_param, sweep_mode, tolerances
from ._report import json_ready, number, write_json


def _run(args, parser, config) -> int:
    import diffrax as dfx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flows import SaveAt, euclidean_flow, intrinsic_flow, relative_deviation

    from ._examples import EXAMPLES

    example = EXAMPLES[args.example]
    try:
        # Drawn in float64 and cast: one seed, one problem, at either precision.
        model, loss, K = example.build(config, precision=args.precision)
    except ValueError as e:
        parser.exit(2, f"intrinsic run: error: {e}\n")
    rtol, atol = args.tolerances
    ts = jnp.linspace(0.0, config["t1"], args.num_times)
    show = sys.stderr.isatty() and not args.no_progress
    options = dict(
        saveat=SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
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
    with np.errstate(invalid="ignore"):
        drift = np.fmax.accumulate(
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
    series = [np.asarray(euc.losses), np.asarray(intr.losses), deviation, drift]
    if not failed and not all(np.isfinite(x).all() for x in series):
        failed = [("run", "a loss, the deviation or a conservation law is not finite")]
    status = "failed" if failed else "ok"
    num_params = sum(
        x.size for x in jax.tree.leaves(model) if jnp.issubdtype(x.dtype, jnp.floating)
    )
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(model.lift()))
    print(f"intrinsic run {example.name}: {example.description}")
    print(
        "config: "
        + ", ".join(f"{k}={v}" for k, v in config.items())
        + f" | D = {num_params} parameters, d = {dim} lifted coordinates, float"
        f"{args.precision}, rtol={rtol:g}, atol={atol:g}"
    )
    header = f"{'t':>9} {'loss (θ flow)':>15} {'loss (z flow)':>15} {'rel. deviation':>15} {'cons. drift':>12}"
    print(header)
    print("-" * len(header))
    for i, t in enumerate(np.asarray(ts)):
        print(
            f"{t:9.3f} {number(float(euc.losses[i]), '.6e', 15)} "
            f"{number(float(intr.losses[i]), '.6e', 15)} "
            f"{number(float(deviation[i]), '.3e', 15)} {number(float(drift[i]), '.3e', 12)}"
        )
    note = CONSERVATION_NOTES.get(example.name)
    report = {
        "example": example.name,
        "status": status,
        "failures": dict(failed),
        "config": config,
        "num_parameters": int(num_params),
        "lifted_dimension": dim,
        "precision": args.precision,
        "rtol": rtol,
        "atol": atol,
        "ts": np.asarray(ts).tolist(),
        "euclidean_losses": np.asarray(euc.losses).tolist(),
        "intrinsic_losses": np.asarray(intr.losses).tolist(),
        "relative_deviation": deviation.tolist(),
        "conservation_drift": drift.tolist(),
        "max_relative_deviation": float(np.max(deviation)),
        "max_conservation_drift": float(drift[-1]),
        "conservation_note": note,
        "euclidean_steps": int(euc.stats["num_steps"]),
        "intrinsic_steps": int(intr.stats["num_steps"]),
        "euclidean_seconds": euc_time,
        "intrinsic_seconds": intr_time,
        "euclidean_event_times": None
        if euc.event_times is None
        else np.asarray(euc.event_times).tolist(),
        "intrinsic_event_times": None
        if intr.event_times is None
        else np.asarray(intr.event_times).tolist(),
    }
    report_path = os.path.join(args.out, "report.json")
    write_json(report_path, report)
    figure_path = os.path.join(args.out, "flows.png")
    _plot(np.asarray(ts), report, figure_path)
    print(
        f"max relative deviation {number(report['max_relative_deviation'], '.3e', 0)}, max "
        f"conservation drift {number(report['max_conservation_drift'], '.3e', 0)}; Euclidean "
        f"flow {euc_time:.2f} s ({report['euclidean_steps']} steps), intrinsic flow "
        f"{intr_time:.2f} s ({report['intrinsic_steps']} steps)"
    )
    if note:
        print(f"note: {note}")
    if euc.event_times is not None:
        print(
            "pattern changes (activation or weight sign) at t = "
            + (", ".join(f"{t:.4f}" for t in report["euclidean_event_times"]) or "none")
            + " (θ flow); "
            + (", ".join(f"{t:.4f}" for t in report["intrinsic_event_times"]) or "none")
            + " (z flow)"
        )
    print(f"status: {'FAILED (' + _failure_text(failed) + ')' if failed else 'ok'}")
    print(f"wrote {report_path} and {figure_path}")
    for name, msg in failed:
        print(f"error: the {name} flow failed: {msg}", file=sys.stderr)
    return 1 if failed else 0


def _failure_text(failed) -> str:
    return "; ".join(f"{name} flow: {msg.rstrip('.')}" for name, msg in failed)


# Why a conservation law drifts along the Euclidean flow although the flows agree.
CONSERVATION_NOTES = {
    "neural-ode": "H(s) is conserved by the function-space flow only; the Euclidean flow on "
    "the degree + 1 Legendre coefficients is its Galerkin approximation, so H(s) drifts by "
    "the truncation of the basis (largest at the ends of [0, 1], amplified by ∂s e_k = O(k²)): "
    "about 2.7e-2 at the default degree 10, 4e-3 at --degree 12 (this command, t1 = 5). Raise --degree to "
    "shrink it; z = φ(θ) is much less sensitive (see the deviation).",
}


def _plot(ts, report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def values(key):
        return np.array([np.nan if v is None else v for v in report[key]], dtype=float)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    panels = (
        (
            axes[0],
            (
                ("euclidean_losses", "o-", "Euclidean flow on θ"),
                ("intrinsic_losses", "x--", "intrinsic flow on z"),
            ),
            "loss f(z(t))",
            "Training loss",
            0,
        ),
        # Both are exactly 0 at t0 by construction: plotted from the first step on.
        (
            axes[1],
            (("relative_deviation", "o-", None),),
            "‖φ(θ(t)) − z(t)‖ / max‖z‖",
            "Agreement of the flows",
            1,
        ),
        (
            axes[2],
            (("conservation_drift", "s-", None),),
            "max |h(θ(t)) − h(θ₀)|",
            "Conservation",
            1,
        ),
    )
    for ax, curves, ylabel, title, first in panels:
        drawn = False
        for key, style, label in curves:
            y = values(key)[first:]
            keep = np.isfinite(y) & (y > 0)
            if keep.any():
                ax.semilogy(ts[first:][keep], y[keep], style, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no finite positive values", ha="center", transform=ax.transAxes)
        ax.set(xlabel="t", ylabel=ylabel, title=title, xlim=(ts[0], ts[-1]))
        if drawn and curves[0][2]:
            ax.legend()
    title = f"intrinsic run {report['example']} (float{report['precision']})"
    if report["status"] != "ok":
        title += " — FAILED: " + _failure_text(report["failures"].items())
    fig.suptitle(title, color="C3" if report["status"] != "ok" else "black", wrap=True)
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
    try:
        # Every check that needs no JAX, before JAX loads and before any work: an argument
        # error exits with status 2 and one line naming the option.
        if args.command in ("run", "sweep", "analyze") and args.example in CATALOG:
            config = config_of(args, CATALOG[args.example])
        if args.command == "run":
            args.tolerances = tolerances(args)
        if args.command == "sweep":
            args.param_name, args.param_values = parse_param(args.param)
            args.sweep_mode = sweep_mode(
                CATALOG[args.example], config, args.param_name, args.param_values
            )
            if args.sweep_mode == "loop" and args.devices is not None:
                raise ValueError(
                    f"--devices: sweeping {args.param_name} of {args.example!r} integrates "
                    "one member after another, not an ensemble to shard"
                )
        if args.command == "analyze":
            args.max_depth = _analyze_depth(args, config)
        if args.command in ("run", "sweep", "reproduce"):
            check_out(args.out)
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
    from ._sweep import format_sweep, sweep

    example = EXAMPLES[args.example]
    name, values = args.param_name, args.param_values
    try:
        report = sweep(
            example,
            config,
            name,
            values,
            mode=args.sweep_mode,
            devices=args.devices,
            out=args.out,
            chunks=args.chunks,
            progress=sys.stderr.isatty() and not args.no_progress,
        )
    except ValueError as e:
        parser.exit(2, f"intrinsic sweep: error: {e}\n")
    how = (
        "one vmapped ensemble"
        if args.sweep_mode == "ensemble"
        else f"one flow per member: {name} changes the data or the time span"
    )
    print(f"intrinsic sweep {example.name} over {name} ({len(values)} values, {how})")
    print(format_sweep(report))
    failed = [r for r in report["rows"] if not r["succeeded"]]
    print(f"status: {report['status']}")
    print(f"wrote {os.path.join(args.out, 'sweep.json')} and {os.path.join(args.out, 'sweep.png')}")
    if failed:
        print(f"error: {len(failed)} flow(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _analyze_depth(args, config) -> int | None:
    """The bracket levels of `analyze`: `--max-depth`, capped for the neural ODE, whose
    levels differentiate through the depth solve (unbounded, they ran out of memory)."""
    if args.example != "neural-ode":
        return args.max_depth
    cap = _options.NEURAL_ODE_MAX_DEPTH
    if args.max_depth is not None and args.max_depth > cap:
        raise ValueError(
            f"--max-depth {args.max_depth}: at most {cap} for neural-ode (each bracket level "
            "nests derivatives of the depth solve; its program grows about 3x per level)"
        )
    size = (config["degree"] + 1) * config["n"] ** 2
    if size > _options.NEURAL_ODE_MAX_PARAMETERS:
        raise ValueError(
            f"neural-ode with n={config['n']}, degree={config['degree']} has D = {size} "
            f"parameters; analyze allows at most {_options.NEURAL_ODE_MAX_PARAMETERS} for it "
            "(its brackets differentiate through the depth solve)"
        )
    return _options.NEURAL_ODE_DEPTH if args.max_depth is None else args.max_depth


def _analyze(args, parser, config) -> int:
    import jax

    from ._analyze import analyze, format_report, load_factorization
    from ._examples import EXAMPLES

    key = jax.random.key(args.seed)
    symbolic = False if args.no_symbolic else None
    try:
        if args.example in EXAMPLES:
            example = EXAMPLES[args.example]
            if args.init == "random":
                model = example.build_random(config)
            else:
                model = example.build_model(config)  # no metric: analyze does not need K
            if not example.polynomial:
                symbolic = False  # SymPy needs a polynomial lifting
        else:
            model = load_factorization(args.example, key)
        report = analyze(model, key=key, symbolic=symbolic, max_depth=args.max_depth)
    except ValueError as e:
        parser.exit(2, f"intrinsic analyze: error: {e}\n")
    if args.example == "neural-ode":
        report["note"] = (
            f"neural-ode: bracket levels capped at {args.max_depth} (--max-depth, at most "
            f"{_options.NEURAL_ODE_MAX_DEPTH}): each level differentiates through the depth "
            "solve, so the count of conservation laws is usually undecided; the laws H(s) "
            "of the function-space model are listed by models.LinearNeuralODE.conservation_laws"
        )
    if args.json:
        print(json.dumps(json_ready(report), indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0
