"""The flows' options, checked before any work.

Static options (types, which solver goes with which controller, which adjoint) raise
`TypeError`/`ValueError` naming the option, on the host or while a compiled flow is
traced (`check_static_options`). Values (times, tolerances) become arrays, traced under
`jit` so that new values recompile nothing; they are checked again with `eqx.error_if`
inside the compiled solve (`flows._integrate`), and on the host, with the numbers in the
message, when they are concrete (`normalise_options`).
"""

import math
from typing import Any

import diffrax as dfx
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


def check_options(*, args, max_events, **options) -> dict[str, Any]:
    """Every check of the flows' options, on the host; returns them normalised (see
    `normalise_options`), with `max_events`."""
    del args  # any PyTree
    options = normalise_options(max_events=max_events, **options)
    check_static_options(**options)
    return {**options, "max_events": int(max_events)}


def normalise_options(
    *,
    t0,
    t1,
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
    """The checks that need the options' values, on the host, on every call; returns the
    options with times and PID tolerances as arrays of the default float dtype (NumPy
    arrays for Python numbers: a compiled solve traces them like any array), without
    `max_events`.

    Kept to NumPy and `isinstance`: an eager JAX operation per option would cost more
    than a warm solve of a small model. The static options are checked by
    `check_static_options`, which a compiled flow calls while tracing (once per
    compilation), and values again inside the solve with `eqx.error_if`.
    """
    dtype = jax.dtypes.canonicalize_dtype(float)
    raw = t0, t1
    t0, t1 = _scalar(t0, "t0", dtype), _scalar(t1, "t1", dtype)
    given = _host_value(raw[0]), _host_value(raw[1])
    if dt0 is not None:
        dt0 = _scalar(dt0, "dt0", dtype)
    if isinstance(stepsize_controller, dfx.PIDController):
        stepsize_controller = _traced_tolerances(stepsize_controller, dtype)
    if not isinstance(saveat, SaveAt):
        raise TypeError(
            f"`saveat` must be a `flows.SaveAt` (e.g. `flows.SaveAt(ts=ts)`), got {saveat!r}."
        )
    if isinstance(max_events, bool) or not isinstance(max_events, int | np.integer):
        raise TypeError(f"`max_events` must be a non-negative integer, got {max_events!r}.")
    if max_events < 0:
        raise ValueError(f"`max_events` must be a non-negative integer, got {max_events}.")
    known = None not in given
    if known and not given[1] > given[0]:
        raise ValueError(f"`t1` must be greater than `t0` = {given[0]}, got {given[1]}.")
    if saveat.ts is not None and known and concrete(saveat.ts):
        ts = np.asarray(saveat.ts)
        if np.any(np.diff(ts) < 0):
            raise ValueError(f"`SaveAt(ts=...)` must be non-decreasing, got {ts}.")
        if ts[0] < given[0] or ts[-1] > given[1]:
            raise ValueError(
                f"`SaveAt(ts=...)` must lie in [t0, t1] = [{given[0]}, {given[1]}], got "
                f"[{ts[0]}, {ts[-1]}]."
            )
    # NumPy scalars as Python ones (as diffrax expects), where they are what was asked.
    if isinstance(max_steps, np.integer):
        max_steps = int(max_steps)
    if isinstance(throw, np.bool_):
        throw = bool(throw)
    return dict(
        t0=t0,
        t1=t1,
        dt0=dt0,
        solver=solver,
        stepsize_controller=stepsize_controller,
        saveat=saveat,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
        progress_meter=progress_meter,
    )


def check_static_options(
    *,
    t0,
    t1,
    solver,
    stepsize_controller,
    dt0,
    saveat,
    adjoint,
    max_steps,
    throw,
    progress_meter,
) -> None:
    """The checks of the static options (types, which solver goes with which controller,
    which adjoint): `TypeError`/`ValueError` naming the option.

    They depend only on what a compiled flow keys its cache on, so a flow may run them
    while tracing: once per compilation, not on every call.
    """
    del t0, t1, saveat  # checked by `normalise_options`
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


def as_traced(t0, t1, options: dict):
    """Times and PID tolerances as arrays, for an outer `filter_jit` that should trace
    them (Python floats would be static: part of its cache key)."""
    dtype = jax.dtypes.canonicalize_dtype(float)
    t0, t1 = _scalar(t0, "t0", dtype), _scalar(t1, "t1", dtype)
    controller = options.get("stepsize_controller")
    if isinstance(controller, dfx.PIDController):
        options = {**options, "stepsize_controller": _traced_tolerances(controller, dtype)}
    if options.get("dt0") is not None:
        options = {**options, "dt0": _scalar(options["dt0"], "dt0", dtype)}
    return t0, t1, options


# Python numbers already converted (the times of repeated calls: t0 = 0.0, t1 = 1.0, ...),
# by value: an eager `jnp.asarray` costs more than the rest of a warm call's host-side
# work. Only concrete arrays are kept (under a trace `jnp.asarray` makes a tracer).
_SCALARS: dict[tuple[Any, np.dtype], jax.Array] = {}


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _scalar(value, name, dtype) -> jax.Array:
    # An array of `dtype`, never weakly typed: a weak type would be another cache entry
    # of the compiled solve.
    if _is_number(value):
        key = (value, dtype)
        hit = _SCALARS.get(key)
        if hit is not None:
            return hit
        try:
            finite = math.isfinite(value)
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError(f"`{name}` must be finite, got {float(value)}.")
        out = jnp.asarray(value, dtype)
        if concrete(out):
            if len(_SCALARS) >= 256:
                _SCALARS.clear()
            _SCALARS[key] = out
        return out
    if isinstance(value, str | bytes | bool | np.bool_) or not _real(value):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if np.shape(value) != ():
        raise ValueError(f"`{name}` must be a scalar, got an array of shape {np.shape(value)}.")
    if concrete(value) and not np.isfinite(np.asarray(value)):
        raise ValueError(f"`{name}` must be finite, got {float(value)}.")
    return _as_dtype(value, dtype)


def _as_dtype(value, dtype) -> jax.Array:
    if isinstance(value, jax.Array) and value.dtype == dtype and not value.weak_type:
        return value
    return jnp.asarray(value).astype(dtype)


def _host_value(value) -> float | None:
    # The number, where it is known on the host (a Python number even under `jit`).
    if _is_number(value):
        return float(value)
    if concrete(value):
        return float(np.asarray(value))
    return None


def _real(value) -> bool:
    if isinstance(value, int | float):
        return True
    kind = getattr(value, "dtype", None)
    if kind is None:
        try:
            kind = np.asarray(value).dtype
        except (TypeError, ValueError):
            return False
    return jnp.issubdtype(kind, jnp.integer) or jnp.issubdtype(kind, jnp.floating)


def concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


# Controllers already converted, by identity: a flow is mostly called again and again with
# one controller object (the default, or one the caller keeps), and the conversion costs
# more than the rest of a warm call's host-side work. An entry holds its controller, so
# its id cannot be reused while cached; controllers holding tracers are never cached.
_CONVERTED: dict[tuple[int, np.dtype], tuple[dfx.PIDController, dfx.PIDController]] = {}


# The flows' default step-size controller: rtol = atol = 1e-8, or 100 ε of the float dtype
# where that is larger (float32: 1.2e-5), so that the default is attainable in every
# precision while a tolerance a caller asks for below ε is refused.
DEFAULT_CONTROLLER = dfx.PIDController(rtol=1e-8, atol=1e-8)
_DEFAULTS: dict[np.dtype, dfx.PIDController] = {}


def _default_for(dtype) -> dfx.PIDController:
    tol = 100 * float(jnp.finfo(dtype).eps)
    if tol <= 1e-8:
        return DEFAULT_CONTROLLER
    if dtype not in _DEFAULTS:
        _DEFAULTS[dtype] = dfx.PIDController(rtol=tol, atol=tol)
    return _DEFAULTS[dtype]


def _traced_tolerances(controller: dfx.PIDController, dtype) -> dfx.PIDController:
    if controller is DEFAULT_CONTROLLER:
        controller = _default_for(dtype)
    # As arrays, the tolerances are traced values of the compiled solve: another
    # tolerance recompiles nothing (Python floats would be part of the cache key).
    key = (id(controller), dtype)
    hit = _CONVERTED.get(key)
    if hit is not None and hit[0] is controller:
        return hit[1]
    for name in ("rtol", "atol"):
        value = getattr(controller, name)
        if isinstance(value, str) or not _real(value) or np.shape(value) != ():
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
    # Swap the two leaves by their paths (what `eqx.tree_at` does, several times slower).
    leaves, treedef = jax.tree_util.tree_flatten_with_path(controller)
    converted = jax.tree.unflatten(
        treedef,
        [_tolerance(leaf, dtype) if _is_tolerance(path) else leaf for path, leaf in leaves],
    )
    # Cache only what is concrete *after* conversion: under an outer trace `jnp.asarray`
    # of a Python float is a tracer, and a cached tracer leaks into the next trace.
    if concrete(*jax.tree.leaves(converted)):
        if len(_CONVERTED) >= 64:
            _CONVERTED.clear()
        _CONVERTED[key] = (controller, converted)
    return converted


def _is_tolerance(path) -> bool:
    return (
        len(path) == 1
        and isinstance(path[0], jax.tree_util.GetAttrKey)
        and path[0].name in ("rtol", "atol")
    )


def _tolerance(value, dtype):
    return jnp.asarray(value, dtype) if _is_number(value) else _as_dtype(value, dtype)
