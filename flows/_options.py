"""The flows' options, checked before anything is traced.

Static options (types, which solver goes with which controller, which adjoint) raise
`TypeError`/`ValueError` on the host. Values (times, tolerances) become arrays, traced
under `jit` so that new values recompile nothing; they are checked again with
`eqx.error_if` inside the compiled solve (`flows._integrate`), and here, with the numbers
in the message, when they are concrete.
"""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._solution import SaveAt

# Adjoints that cannot differentiate through saved summaries, with the reason.
_REFUSED_ADJOINTS = {
    dfx.BacksolveAdjoint: (
        "`diffrax.BacksolveAdjoint` cannot differentiate through the summaries a flow "
        "saves (`SubSaveAt(fn=...)`: z, the loss, the laws); use "
        "`diffrax.RecursiveCheckpointAdjoint()` (the default, O(log steps) memory), "
        "`diffrax.DirectAdjoint()` or `diffrax.ForwardMode()`."
    ),
    dfx.ImplicitAdjoint: (
        "`diffrax.ImplicitAdjoint` differentiates a steady state (it assumes the "
        "solution at `t1` does not depend on the path), not a gradient flow over a "
        "finite time span; use `diffrax.RecursiveCheckpointAdjoint()` (the default), "
        "`diffrax.DirectAdjoint()` or `diffrax.ForwardMode()`."
    ),
}


def check_options(
    *,
    t0,
    t1,
    args,
    solver,
    stepsize_controller,
    dt0,
    saveat,
    adjoint,
    max_steps,
    throw,
    progress_meter,
    max_events,
) -> dict[str, Any]:
    """Host-side checks of the flows' options; returns them normalised (times as arrays
    of the default float dtype, tolerances as arrays)."""
    del args  # any PyTree
    dtype = jnp.result_type(float)
    times = {}
    for name, value in (("t0", t0), ("t1", t1), ("dt0", dt0)):
        if value is None and name == "dt0":
            times[name] = None
            continue
        times[name] = _scalar(value, name, dtype)
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(
            f"`solver` must be a diffrax solver (e.g. `diffrax.Tsit5()`), got {solver!r}."
        )
    if not isinstance(stepsize_controller, dfx.AbstractStepSizeController):
        raise TypeError(
            "`stepsize_controller` must be a diffrax step-size controller (e.g. "
            f"`diffrax.PIDController(rtol=1e-8, atol=1e-8)`), got {stepsize_controller!r}."
        )
    adaptive = isinstance(stepsize_controller, dfx.AbstractAdaptiveStepSizeController)
    if adaptive and not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise TypeError(
            f"`solver` = {type(solver).__name__}() has no error estimate, so it cannot "
            f"be used with the adaptive `stepsize_controller` = "
            f"{type(stepsize_controller).__name__}; pass "
            "`stepsize_controller=diffrax.ConstantStepSize()` and a `dt0`, or an adaptive "
            "solver such as `diffrax.Tsit5()`."
        )
    if isinstance(stepsize_controller, dfx.ConstantStepSize) and dt0 is None:
        raise ValueError(
            "`stepsize_controller=diffrax.ConstantStepSize()` needs the step: pass `dt0`."
        )
    if isinstance(stepsize_controller, dfx.PIDController):
        stepsize_controller = _traced_tolerances(stepsize_controller, dtype)
    if not isinstance(saveat, SaveAt):
        raise TypeError(
            f"`saveat` must be a `flows.SaveAt` (e.g. `flows.SaveAt(ts=ts)`), got {saveat!r}."
        )
    if not isinstance(adjoint, dfx.AbstractAdjoint):
        raise TypeError(
            f"`adjoint` must be a diffrax adjoint (e.g. `diffrax.RecursiveCheckpointAdjoint()`), "
            f"got {adjoint!r}."
        )
    for kind, reason in _REFUSED_ADJOINTS.items():
        if isinstance(adjoint, kind):
            raise ValueError(reason)
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 1
    ):
        raise ValueError(f"`max_steps` must be a positive integer or None, got {max_steps!r}.")
    if max_steps is None and isinstance(adjoint, dfx.RecursiveCheckpointAdjoint):
        if adjoint.checkpoints is None:
            raise ValueError(
                "`max_steps=None` needs an adjoint that does not bound the steps: "
                "`diffrax.RecursiveCheckpointAdjoint(checkpoints=N)` or "
                "`diffrax.DirectAdjoint()`, or a finite `max_steps`."
            )
    if not isinstance(throw, bool | np.bool_):
        raise TypeError(f"`throw` must be a bool, got {throw!r}.")
    if not isinstance(progress_meter, dfx.AbstractProgressMeter):
        raise TypeError(
            "`progress_meter` must be a diffrax progress meter (`diffrax.NoProgressMeter()`, "
            f"`diffrax.TqdmProgressMeter()`, `diffrax.TextProgressMeter()`), got "
            f"{progress_meter!r}."
        )
    if isinstance(max_events, bool) or not isinstance(max_events, int | np.integer):
        raise TypeError(f"`max_events` must be a non-negative integer, got {max_events!r}.")
    if max_events < 0:
        raise ValueError(f"`max_events` must be a non-negative integer, got {max_events}.")
    t0, t1 = times["t0"], times["t1"]
    if concrete(t0, t1) and not bool(t1 > t0):
        raise ValueError(f"`t1` must be greater than `t0` = {float(t0)}, got {float(t1)}.")
    if saveat.ts is not None and concrete(t0, t1, saveat.ts):
        ts = np.asarray(saveat.ts)
        if np.any(np.diff(ts) < 0):
            raise ValueError(f"`SaveAt(ts=...)` must be non-decreasing, got {ts}.")
        if ts[0] < float(t0) or ts[-1] > float(t1):
            raise ValueError(
                f"`SaveAt(ts=...)` must lie in [t0, t1] = [{float(t0)}, {float(t1)}], got "
                f"[{ts[0]}, {ts[-1]}]."
            )
    return dict(
        t0=t0,
        t1=t1,
        dt0=times["dt0"],
        solver=solver,
        stepsize_controller=stepsize_controller,
        saveat=saveat,
        adjoint=adjoint,
        max_steps=None if max_steps is None else int(max_steps),
        throw=bool(throw),
        progress_meter=progress_meter,
        max_events=int(max_events),
    )


def as_traced(t0, t1, options: dict):
    """Times and PID tolerances as arrays, for an outer `filter_jit` that should trace
    them (Python floats would be static: part of its cache key)."""
    dtype = jnp.result_type(float)
    t0, t1 = _scalar(t0, "t0", dtype), _scalar(t1, "t1", dtype)
    controller = options.get("stepsize_controller")
    if isinstance(controller, dfx.PIDController):
        options = {**options, "stepsize_controller": _traced_tolerances(controller, dtype)}
    if options.get("dt0") is not None:
        options = {**options, "dt0": _scalar(options["dt0"], "dt0", dtype)}
    return t0, t1, options


def _scalar(value, name, dtype):
    if isinstance(value, str | bytes) or not _real(value):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"`{name}` must be a scalar, got an array of shape {value.shape}.")
    if concrete(value) and not np.isfinite(np.asarray(value)):
        raise ValueError(f"`{name}` must be finite, got {float(value)}.")
    return value.astype(dtype)


def _real(value) -> bool:
    try:
        kind = jnp.asarray(value).dtype
    except TypeError:
        return False
    return jnp.issubdtype(kind, jnp.integer) or jnp.issubdtype(kind, jnp.floating)


def concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _traced_tolerances(controller: dfx.PIDController, dtype) -> dfx.PIDController:
    # As arrays, the tolerances are traced values of the compiled solve: another
    # tolerance recompiles nothing (Python floats would be part of the cache key).
    for name in ("rtol", "atol"):
        value = getattr(controller, name)
        if isinstance(value, str) or not _real(value) or jnp.shape(value) != ():
            raise TypeError(f"`stepsize_controller.{name}` must be a real scalar, got {value!r}.")
        if concrete(value) and not (0 < float(value) < 1):
            raise ValueError(
                f"`stepsize_controller.{name}` must lie in (0, 1), got {float(value)}."
            )
        eps = float(jnp.finfo(dtype).eps)
        if name == "rtol" and concrete(value) and float(value) <= eps:
            raise ValueError(  # a relative accuracy below rounding is never reached
                f"`stepsize_controller.rtol` must lie in (0, 1) above the machine epsilon "
                f"{eps:.3g} of {jnp.dtype(dtype).name}, got {float(value)}."
            )
    return eqx.tree_at(
        lambda c: (c.rtol, c.atol),
        controller,
        (jnp.asarray(controller.rtol, dtype), jnp.asarray(controller.atol, dtype)),
    )
