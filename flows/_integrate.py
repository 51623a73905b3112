"""The one integration loop both flows share: diffrax with saved summaries."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from ._solution import FlowSolution


def resolve_ts(t0, t1, ts):
    """Validate and return the save times (default: `[t0, t1]`)."""
    if ts is None:
        return jnp.array([t0, t1], dtype=jnp.result_type(float))
    ts = jnp.asarray(ts, dtype=jnp.result_type(float))
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if not isinstance(ts, jax.core.Tracer):
        if bool(jnp.any(jnp.diff(ts) < 0)):
            raise ValueError("`ts` must be non-decreasing.")
        if float(ts[0]) < float(t0) or float(ts[-1]) > float(t1):
            raise ValueError(
                f"`ts` must lie in [t0, t1] = [{float(t0)}, {float(t1)}], got "
                f"[{float(ts[0])}, {float(ts[-1])}]."
            )
    return ts


def check_options(t0, t1, rtol, atol, max_steps):
    if not float(t1) > float(t0):
        raise ValueError(f"`t1` must be greater than `t0` = {float(t0)}, got {float(t1)}.")
    for name, x in (("rtol", rtol), ("atol", atol)):
        if not float(x) > 0:
            raise ValueError(f"`{name}` must be positive, got {x}.")
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"`max_steps` must be a positive integer or None, got {max_steps}.")


def integrate(
    vector_field: Callable, y0, save: Callable, t0, t1, ts, *, rtol, atol, dt0, **options
):
    """Solve $y' = $ `vector_field(y)` and save `save(y)` (a dict) at `ts`.

    Times and tolerances become arrays here so that changing them does not recompile.
    `options` are the remaining keyword arguments of `_integrate`.
    """
    as_array = lambda x: jnp.asarray(x, dtype=ts.dtype)
    return _integrate(
        vector_field,
        y0,
        save,
        as_array(t0),
        as_array(t1),
        ts,
        rtol=as_array(rtol),
        atol=as_array(atol),
        dt0=None if dt0 is None else as_array(dt0),
        **options,
    )


@eqx.filter_jit
def _integrate(
    vector_field: Callable,
    y0,
    save: Callable,
    t0,
    t1,
    ts,
    *,
    solver,
    rtol,
    atol,
    dt0,
    max_steps,
    adjoint,
    progress: bool,
    throw: bool,
) -> FlowSolution:
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: vector_field(y)),
        solver,
        t0,
        t1,
        dt0,
        y0,
        saveat=dfx.SaveAt(ts=ts, fn=lambda t, y, args: save(y)),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint,
        max_steps=max_steps,
        throw=False,
        progress_meter=dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter(),
    )
    saved = sol.ys
    # A state that went non-finite is a failure even if diffrax's controller let it
    # through: say so instead of returning a trajectory of NaNs as "successful".
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(saved["z"])]))
    result = dfx.RESULTS.where(
        (sol.result == dfx.RESULTS.successful) & ~finite, dfx.RESULTS.nonfinite, sol.result
    )
    out = FlowSolution(
        ts=sol.ts,
        zs=saved["z"],
        losses=saved["loss"],
        conserved=saved.get("laws"),
        params=saved.get("params"),
        result=result,
        stats=sol.stats,
    )
    if throw:
        out = result.error_if(out, result != dfx.RESULTS.successful)
    return out
