"""The one integration loop both flows share: diffrax with saved summaries.

A smooth flow is one `diffeqsolve`. A piecewise-smooth flow (a ReLU network, whose
loss is smooth only on each region of constant activation pattern) is a sequence of
solves, each stopped by a `diffrax.Event` when a switching function changes sign, and
restarted from the event with the new pattern.

The options arrive checked (`flows._options`); their values are checked
again here with `eqx.error_if`, so the checks also hold under `jit` and `vmap`.
"""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._options import concrete
from ._solution import RESULTS, FlowSolution, SaveAt


def integrate(
    vector_field: Callable,
    y0,
    save: Callable,
    *,
    options: dict,
    args,
    switching: Callable | None = None,
    extra=None,
    on_event: Callable | None = None,
) -> tuple[FlowSolution, Any]:
    r"""Solve $y' = $ `vector_field(y, args)` saving `save(y, args)`; return the solution
    and the state at $t_1$ (where the solve stopped, if it failed).

    `options` come from `check_options`. Without `switching` this is one solve, under
    `jit`. With it, `switching(y, extra)` returns a 1-D array $g(y)$ whose signs define
    the current smooth piece; the vector field and the summary receive
    `(args, (pattern, extra))` with `pattern` the boolean $g > 0$ at the start of the
    piece, and an event ends the piece when some $g_i$ leaves the sign it had there.
    Then `on_event(y, pattern, extra, crossed)` (default: flip `pattern[crossed]`, an
    array of indices) returns the next piece's `(pattern, extra)`; `extra` is any
    PyTree of arrays of fixed shapes that the pieces need (e.g. the weight signs of a
    ReLU network). The restarts are a host-side loop: a piecewise flow cannot be traced.
    """
    options = dict(options)
    max_events = options.pop("max_events")
    if switching is None:
        sol, y1, _ = _solve_jit(vector_field, y0, save, args, cond=None, **options)
        return sol, y1
    return _integrate_piecewise(
        vector_field,
        y0,
        save,
        switching,
        args,
        extra=extra,
        on_event=_flip if on_event is None else on_event,
        max_events=max_events,
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


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


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
        _, (pattern, extra) = args
        g = self.switching(y, extra)
        # An exact zero is not a switching function but a degenerate one: e.g. a neuron
        # of a bias-free net whose inputs are all switched off on a sample. It stays 0
        # (its ReLU and derivative are 0) until an upstream function switches.
        return jnp.min(jnp.where(g == 0, jnp.inf, jnp.where(pattern, g, -g)))


def solve(
    vector_field: Callable,
    y0,
    save: Callable,
    args,
    *,
    cond,
    t0,
    t1,
    dt0,
    solver,
    stepsize_controller,
    saveat: SaveAt,
    adjoint,
    max_steps,
    throw: bool,
    progress_meter,
    start=None,
) -> tuple[FlowSolution, Any, Any]:
    """One smooth solve, to be traced: `integrate` compiles it alone, a flow may compile
    it inside its own `filter_jit` (one compiled call per flow). Returns the solution,
    the state at the end and the time there."""
    _check_shapes(vector_field, save, y0, args)
    t1 = eqx.error_if(t1, t1 <= t0, "`t1` must be greater than `t0`.")
    ts = saveat.ts
    if ts is not None:
        ts = ts.astype(t0.dtype)
        ts = eqx.error_if(ts, jnp.any(ts[1:] < ts[:-1]), "`SaveAt(ts=...)` must be non-decreasing.")
        ts = eqx.error_if(
            ts, jnp.any((ts < t0) | (ts > t1)), "`SaveAt(ts=...)` must lie in [t0, t1]."
        )
    if start is not None:  # a later piece of a piecewise flow
        t0 = start
        ts = None if ts is None else jnp.maximum(ts, start)
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
        # t0 and t1 as diffrax's flags, not as entries of `ts`: saving at `ts` costs an
        # inner loop at every step (+10% on a small model), the flags cost nothing.
        saveat=dfx.SaveAt(
            subs=(
                dfx.SubSaveAt(
                    t0=saveat.t0, ts=ts, t1=saveat.t1, fn=lambda t, y, args: save(y, args)
                ),
                dfx.SubSaveAt(t1=True),
            )
        ),
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        event=event,
        max_steps=max_steps,
        throw=False,
        progress_meter=progress_meter,
    )
    saved, last = sol.ys
    y1 = jax.tree.map(lambda x: x[-1], last)
    saved_ts, saved = _mark_unreached(sol, saveat, ts, saved)
    # A state that went non-finite is a failure even if diffrax's controller let it
    # through (or gave up on it as "maximum steps"): say so instead of returning a
    # trajectory of NaNs. Only the saves the solve reached count (diffrax marks the
    # others with t = inf).
    reached = jnp.isfinite(saved_ts)

    def finite_where_reached(x):
        mask = reached.reshape(reached.shape + (1,) * (x.ndim - 1))
        return jnp.all(jnp.isfinite(x) | ~mask)

    leaves = [finite_where_reached(x) for x in jax.tree.leaves(saved["z"])]
    leaves += [finite_where_reached(x) for x in jax.tree.leaves(saved["loss"])]
    finite = jnp.all(jnp.stack(leaves)) & _all_finite(y1)
    result = RESULTS.promote(sol.result)
    result = RESULTS.where(~finite, RESULTS.nonfinite, result)

    # A non-finite start is reported as such, not as "maximum steps reached" after the
    # step-size controller has rejected every step. Looked at only when the solve failed
    # (a non-finite start always makes it fail): a successful call pays nothing for it.
    def start_ok():
        ok = _all_finite(y0) & _all_finite(save(y0, args)["loss"])
        return ok & _all_finite(vector_field(y0, args))

    failed = result != RESULTS.successful
    start_ok = jax.lax.cond(failed, start_ok, lambda: jnp.array(True))
    result = RESULTS.where(start_ok, result, RESULTS.nonfinite_initial_state)
    out = FlowSolution(
        t0=jnp.asarray(t0),
        t1=jnp.asarray(t1),
        ts=saved_ts,
        zs=saved["z"],
        losses=saved["loss"],
        conserved=saved.get("laws"),
        params=saved.get("params"),
        final=None,
        result=result,
        stats=sol.stats,
    )
    if throw and cond is None:
        out = result.error_if(out, result != RESULTS.successful)
    return out, y1, sol.ts[1][-1]


_solve_jit = eqx.filter_jit(solve)


def _mark_unreached(sol, saveat: SaveAt, ts, saved):
    # diffrax saves at its t0 and t1 flags unconditionally: at the start, and wherever
    # the solve stopped. Mark them as it marks the entries of `ts` the solve did not
    # reach (t = inf, values inf): t0 unless a step was accepted (an entry of `ts` is
    # saved after an accepted step), t1 unless the solve got there.
    flags = []
    if saveat.t0:
        flags.append(sol.stats["num_accepted_steps"] == 0)
    if ts is not None:
        flags.append(jnp.zeros(ts.shape, bool))
    if saveat.t1:
        flags.append(sol.result != dfx.RESULTS.successful)
    unreached = jnp.concatenate([jnp.atleast_1d(x) for x in flags])

    def mark(x):
        return jnp.where(unreached.reshape(unreached.shape + (1,) * (x.ndim - 1)), jnp.inf, x)

    return mark(sol.ts[0]), jax.tree.map(mark, saved)


def _integrate_piecewise(
    vector_field, y0, save, switching, args, *, extra, on_event, max_events, throw, **options
):
    # A host-side loop over the smooth pieces; every piece reuses one compilation
    # (times, state and pattern are arrays of fixed shapes).
    t0, t1 = options["t0"], options["t1"]
    if not concrete(t0, t1, *jax.tree.leaves(eqx.filter(y0, eqx.is_array))):
        raise TypeError(
            "A flow with activation-pattern events (a ReLU network on data) restarts on "
            "the host after each event, so it cannot run under `jax.jit`/`jax.vmap`; "
            "call it outside the transformation (the pieces are compiled once)."
        )
    cond = _LeavesPattern(switching)
    pattern = np.asarray(switching(y0, extra)) > 0
    start, y = t0, y0
    pieces, event_times = [], []
    while True:
        piece, y_end, t_end = _solve_jit(
            vector_field,
            y,
            save,
            (args, (jnp.asarray(pattern), extra)),
            cond=cond,
            throw=False,
            start=start,
            **options,
        )
        event = bool(piece.result == RESULTS.event_occurred)
        t_end = float(t_end) if event else float(t1)
        pieces.append((float(start), t_end, piece))
        if not event:
            result = piece.result
            break
        event_times.append(t_end)
        if len(event_times) > max_events:
            result = RESULTS.max_events_reached
            break
        g = np.asarray(switching(y_end, extra))
        # What crossed: the minimiser of the condition, and anything else already on
        # the wrong side (two functions crossing within the root's tolerance).
        signed = np.where(g == 0, np.inf, np.where(pattern, g, -g))
        crossed = np.union1d(np.flatnonzero(signed < 0), [np.argmin(signed)]).astype(int)
        pattern, extra = on_event(y_end, pattern, extra, crossed)
        start, y = jnp.asarray(t_end, jnp.result_type(t0)), y_end

    first = pieces[0][2]
    ts = np.asarray(options["saveat"].times(t0, t1))
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
        t0=first.t0,
        t1=first.t1,
        ts=jnp.asarray(ts),
        final=None,
        result=result,
        stats=stats,
        event_times=jnp.asarray(event_times, ts.dtype),
        **merged,
    )
    if throw and not sol.successful:
        sol = sol.result.error_if(sol, sol.result != RESULTS.successful)
    return sol, y_end
