"""The one integration loop both flows share: diffrax with saved summaries.

A smooth flow is one `diffeqsolve`. A piecewise-smooth flow (a ReLU network, whose
loss is smooth only on each region of constant activation pattern) is a sequence of
solves, each stopped by a `diffrax.Event` when a switching function changes sign, and
restarted from the event with the new pattern.
"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

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
    switching: Callable | None = None,
    extra=None,
    on_event: Callable | None = None,
    max_events: int = 100,
    **options,
) -> FlowSolution:
    """Validate the options, then solve $y' = $ `vector_field(y, args)` saving
    `save(y, args)` at `ts`.

    Checks of values run on the host with NumPy (no device round trips); checks of
    shapes run while tracing `_integrate`, so a cached call pays for neither. Times and
    tolerances are passed as arrays so that changing them does not recompile.

    Without `switching`, `args` is `None` and this is one solve. With it,
    `switching(y, extra)` returns a 1-D array $g(y)$ whose signs define the current
    smooth piece; `args` is `(pattern, extra)` with `pattern` the boolean $g > 0$ at the
    start of each piece, and an event ends the piece when some $g_i$ leaves the sign it
    had there. Then `on_event(y, pattern, extra, crossed)` (default: flip
    `pattern[crossed]`, an array of indices)
    returns the next piece's `(pattern, extra)`; `extra` is any PyTree of arrays of
    fixed shapes that the pieces need (e.g. the weight signs of a ReLU network).
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
    if int(max_events) < 0:
        raise ValueError(f"`max_events` must be a non-negative integer, got {max_events}.")
    ts = np.array([t0, t1], dtype) if ts is None else np.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if np.any(np.diff(ts) < 0):
        raise ValueError("`ts` must be non-decreasing.")
    if ts[0] < t0 or ts[-1] > t1:
        raise ValueError(f"`ts` must lie in [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}].")
    options = dict(
        rtol=rtol,
        atol=atol,
        dt0=None if dt0 is None else np.asarray(dt0, dtype),
        max_steps=max_steps,
        **options,
    )
    if switching is None:
        sol, _, _ = _integrate(vector_field, y0, save, t0, t1, ts, None, cond=None, **options)
        return sol
    return _integrate_piecewise(
        vector_field,
        y0,
        save,
        switching,
        t0,
        t1,
        ts,
        extra=extra,
        on_event=_flip if on_event is None else on_event,
        max_events=int(max_events),
        **options,
    )


def _flip(y, pattern, extra, crossed):
    # The functions that crossed flip; the others keep their sign (the condition was
    # positive for them up to the event), whichever side of zero the root finder left
    # the crossing ones on.
    pattern = pattern.copy()
    pattern[crossed] = ~pattern[crossed]
    return pattern, extra


def _check_shapes(vector_field, save, y0, args):
    # Trace-time only: runs once per compilation.
    loss = jax.eval_shape(save, y0, args)["loss"]
    if loss.shape != ():
        raise ValueError(f"`f` must return a scalar loss, got a value of shape {loss.shape}.")
    out = jax.eval_shape(vector_field, y0, args)
    if jax.tree.structure(out) != jax.tree.structure(y0) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(y0))
    ):
        raise ValueError(
            "The vector field does not return arrays shaped like the state: got "
            f"{jax.tree.map(lambda a: a.shape, out)} for a state shaped "
            f"{jax.tree.map(lambda a: a.shape, y0)}; check that K(z) acts on z-shaped arrays."
        )


class _LeavesPattern(eqx.Module):
    r"""Event condition $\min_i s_i g_i(y)$, $s_i = \pm 1$ the signs at the piece's start.

    It is positive inside the piece and crosses zero downwards when the first $g_i$
    changes sign. Only downward crossings count (`direction=False`): at a restart the
    switching function that just crossed may sit a rounding error on the wrong side of
    zero, and must not trigger again as it moves away.
    Exact zeros of $g$ are ignored (see `__call__`).
    """

    switching: Callable

    def __call__(self, t, y, args, **kwargs):
        pattern, extra = args
        g = self.switching(y, extra)
        # An exact zero is not a switching function but a degenerate one: e.g. a neuron
        # of a bias-free net whose inputs are all switched off on a sample. It stays 0
        # (its ReLU and derivative are 0) until an upstream function switches.
        return jnp.min(jnp.where(g == 0, jnp.inf, jnp.where(pattern, g, -g)))


@eqx.filter_jit
def _integrate(
    vector_field: Callable,
    y0,
    save: Callable,
    t0,
    t1,
    ts,
    args,
    *,
    cond,
    solver,
    rtol,
    atol,
    dt0,
    max_steps,
    adjoint,
    progress: bool,
    throw: bool,
):
    _check_shapes(vector_field, save, y0, args)
    if cond is None:
        event = None
    else:
        # Locate the crossing to near machine precision (the restart is as accurate as
        # the root) by bisection: the condition is a minimum of smooth functions, with
        # kinks where Newton's method can cycle, and it is known to change sign over
        # the step (positive before, non-positive after).
        # Bisection stops when the bracket is below atol + rtol·t *and* |cond| < atol;
        # atol = eps^(9/16) (1e-9 in float64) leaves room for a condition that is itself
        # computed by an inner solve (the recovered θ(z) of a ReLU intrinsic flow).
        eps = float(jnp.finfo(jnp.result_type(t1)).eps)
        root_finder = optx.Bisection(rtol=100 * eps, atol=eps ** (9 / 16), flip=True)
        event = dfx.Event(cond, root_finder, direction=False)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: vector_field(y, args)),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=args,
        saveat=dfx.SaveAt(
            subs=(
                dfx.SubSaveAt(ts=ts, fn=lambda t, y, args: save(y, args)),
                dfx.SubSaveAt(t1=True),
            )
        ),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint,
        event=event,
        max_steps=max_steps,
        throw=False,
        progress_meter=dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter(),
    )
    saved, last = sol.ys
    t_last = sol.ts[1][-1]
    y_last = jax.tree.map(lambda x: x[-1], last)
    # A state that went non-finite is a failure even if diffrax's controller let it
    # through: say so instead of returning a trajectory of NaNs as "successful".
    # Only the saves the solve reached count (diffrax marks the others with t = inf).
    reached = jnp.isfinite(sol.ts[0])

    def all_finite(x):
        return jnp.all(jnp.isfinite(x) | ~reached.reshape(reached.shape + (1,) * (x.ndim - 1)))

    finite = jnp.all(jnp.stack([all_finite(x) for x in jax.tree.leaves(saved["z"])]))
    finite = finite & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(y_last)])
    )
    ok = (sol.result == dfx.RESULTS.successful) | (sol.result == dfx.RESULTS.event_occurred)
    result = dfx.RESULTS.where(ok & ~finite, dfx.RESULTS.nonfinite, sol.result)
    out = FlowSolution(
        ts=sol.ts[0],
        zs=saved["z"],
        losses=saved["loss"],
        conserved=saved.get("laws"),
        params=saved.get("params"),
        result=result,
        stats=sol.stats,
    )
    if throw and cond is None:
        out = result.error_if(out, result != dfx.RESULTS.successful)
    return out, t_last, y_last


def _integrate_piecewise(
    vector_field, y0, save, switching, t0, t1, ts, *, extra, on_event, max_events, throw, **options
) -> FlowSolution:
    # A host-side loop over the smooth pieces; every piece reuses one compilation
    # (times, state and pattern are arrays of fixed shapes).
    cond = _LeavesPattern(switching)
    pattern = np.asarray(switching(y0, extra)) > 0
    start, y = t0, y0
    pieces, event_times = [], []
    while True:
        piece, t_end, y_end = _integrate(
            vector_field,
            y,
            save,
            start,
            t1,
            np.maximum(ts, start),
            (jnp.asarray(pattern), extra),
            cond=cond,
            throw=False,
            **options,
        )
        event = piece.result == dfx.RESULTS.event_occurred
        t_end = float(t_end) if event else float(t1)
        pieces.append((start, t_end, piece))
        if not event:
            result = piece.result
            break
        event_times.append(t_end)
        if len(event_times) > max_events:
            result = piece.result
            break
        g = np.asarray(switching(y_end, extra))
        # What crossed: the minimiser of the condition, and anything else already on
        # the wrong side (two functions crossing within the root's tolerance).
        signed = np.where(g == 0, np.inf, np.where(pattern, g, -g))
        crossed = np.union1d(np.flatnonzero(signed < 0), [np.argmin(signed)]).astype(int)
        pattern, extra = on_event(y_end, pattern, extra, crossed)
        start, y = np.asarray(t_end, ts.dtype), y_end

    first = pieces[0][2]
    merged = {"zs": first.zs, "losses": first.losses, "conserved": first.conserved}
    merged["params"] = first.params
    for lo, hi, piece in pieces[1:]:
        mask = jnp.asarray((ts >= lo) & (ts <= hi))

        def pick(new, old, mask=mask):
            return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)

        for name in merged:
            merged[name] = jax.tree.map(pick, getattr(piece, name), merged[name])
    stats = {
        k: v if k == "max_steps" else sum(p.stats[k] for _, _, p in pieces)
        for k, v in first.stats.items()
    }
    sol = FlowSolution(
        ts=jnp.asarray(ts),
        result=result,
        stats=stats,
        event_times=jnp.asarray(event_times, ts.dtype),
        **merged,
    )
    if throw:
        if len(event_times) > max_events:
            raise RuntimeError(
                f"The activation pattern changed more than `max_events` = {max_events} "
                f"times before t1 = {float(t1)} (last change at t = {event_times[-1]}). "
                "Raise `max_events`, or shorten the time span."
            )
        if not sol.successful:
            raise RuntimeError(
                f"The flow failed after {len(event_times)} pattern change(s): {sol.message}"
            )
    return sol
