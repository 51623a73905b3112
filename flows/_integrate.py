"""The one integration loop both flows share: diffrax with saved summaries."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._solution import FlowSolution


def integrate(
    vector_field: Callable,
    y0,
    save: Callable,
    t0,
    t1,
    ts,
    *,
    rtol,
    atol,
    dt0,
    max_steps,
    **options,
) -> FlowSolution:
    """Validate the options, then solve $y' = $ `vector_field(y)` saving `save(y)` at `ts`.

    Checks of values run on the host with NumPy (no device round trips); checks of
    shapes run while tracing `_integrate`, so a cached call pays for neither. Times and
    tolerances are passed as arrays so that changing them does not recompile.
    `options` are the remaining keyword arguments of `_integrate`.
    """
    dtype = jnp.result_type(float)
    t0, t1, rtol, atol = (np.asarray(x, dtype) for x in (t0, t1, rtol, atol))
    if not t1 > t0:
        raise ValueError(f"`t1` must be greater than `t0` = {t0}, got {t1}.")
    for name, x in (("rtol", rtol), ("atol", atol)):
        if not x > 0:
            raise ValueError(f"`{name}` must be positive, got {x}.")
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"`max_steps` must be a positive integer or None, got {max_steps}.")
    ts = np.array([t0, t1], dtype) if ts is None else np.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if np.any(np.diff(ts) < 0):
        raise ValueError("`ts` must be non-decreasing.")
    if ts[0] < t0 or ts[-1] > t1:
        raise ValueError(f"`ts` must lie in [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}].")
    return _integrate(
        vector_field,
        y0,
        save,
        t0,
        t1,
        ts,
        rtol=rtol,
        atol=atol,
        dt0=None if dt0 is None else np.asarray(dt0, dtype),
        max_steps=max_steps,
        **options,
    )


def _check_shapes(vector_field, save, y0):
    # Trace-time only: runs once per compilation.
    loss = jax.eval_shape(save, y0)["loss"]
    if loss.shape != ():
        raise ValueError(f"`f` must return a scalar loss, got a value of shape {loss.shape}.")
    out = jax.eval_shape(vector_field, y0)
    if jax.tree.structure(out) != jax.tree.structure(y0) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(y0))
    ):
        raise ValueError(
            "The vector field does not return arrays shaped like the state: got "
            f"{jax.tree.map(lambda a: a.shape, out)} for a state shaped "
            f"{jax.tree.map(lambda a: a.shape, y0)}; check that K(z) acts on z-shaped arrays."
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
    _check_shapes(vector_field, save, y0)
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
