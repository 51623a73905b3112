r"""The solve in depth $s \in [0, 1]$ shared by the continuous-depth models.

A continuous-depth network integrates an ODE in its layer variable $s$ with
`diffrax.diffeqsolve`. Its options (solver, tolerances or a fixed number of steps, and
the adjoint that differentiates the solve) are small static configuration of the model,
validated here once (tier (a) errors: at construction, naming the argument).
"""

import warnings
from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

# Legacy names (before adjoints were objects only), accepted with a DeprecationWarning.
_LEGACY_NAMES = {
    "recursive_checkpoint": dfx.RecursiveCheckpointAdjoint,
    "direct": dfx.DirectAdjoint,
    "backsolve": dfx.BacksolveAdjoint,
}


def default_adjoint() -> dfx.AbstractAdjoint:
    r"""`diffrax.DirectAdjoint()`: the one diffrax adjoint under which the depth solve is
    differentiable in both modes *and* its linearization is transposable, which is what
    [`manifolds.induced_metric`][] does (`jax.linearize`, then `jax.linear_transpose`).
    `RecursiveCheckpointAdjoint` and `BacksolveAdjoint` are `custom_vjp`s (no `jvp`);
    `ForwardMode` has a `jvp` through a `while_loop`, which cannot be transposed."""
    return dfx.DirectAdjoint()


def resolve_adjoint(adjoint) -> dfx.AbstractAdjoint:
    """Check the `adjoint` option: any `diffrax.AbstractAdjoint` instance.

    **Raises:** `TypeError` for anything else (a class instead of an instance included);
    `ValueError` for an unknown string. The legacy names `"recursive_checkpoint"`,
    `"direct"` and `"backsolve"` still map to their adjoints, with a `DeprecationWarning`.
    """
    if isinstance(adjoint, dfx.AbstractAdjoint):
        return adjoint
    if isinstance(adjoint, str):
        if adjoint not in _LEGACY_NAMES:
            raise ValueError(
                f"Unknown `adjoint` {adjoint!r}: `adjoint` must be a diffrax.AbstractAdjoint "
                f"instance (e.g. diffrax.DirectAdjoint()); the legacy names are "
                f"{sorted(_LEGACY_NAMES)}."
            )
        cls = _LEGACY_NAMES[adjoint]
        warnings.warn(
            f"`adjoint={adjoint!r}` is deprecated: pass `adjoint=diffrax.{cls.__name__}()`.",
            DeprecationWarning,
            stacklevel=3,
        )
        return cls()
    what = f"the class {adjoint.__name__}" if isinstance(adjoint, type) else repr(adjoint)
    raise TypeError(
        "`adjoint` must be a diffrax.AbstractAdjoint instance (DirectAdjoint, ForwardMode, "
        f"RecursiveCheckpointAdjoint, BacksolveAdjoint, ...), got {what}."
    )


def default_tolerance(dtype) -> float:
    r"""$10^{-2}\sqrt{\varepsilon}$ of `dtype`: $1.5\cdot10^{-10}$ in float64."""
    return float(1e-2 * np.sqrt(jnp.finfo(dtype).eps))


def check_options(solver, rtol, atol, num_steps, max_steps, dtype):
    """Validate the depth-solve options; return `(rtol, atol, num_steps, max_steps)`."""
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax solver, got {type(solver).__name__}.")
    if num_steps is not None:
        if isinstance(num_steps, bool) or int(num_steps) != num_steps or int(num_steps) < 1:
            raise ValueError(f"`num_steps` must be a positive integer or None, got {num_steps!r}.")
        num_steps = int(num_steps)
    elif not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise ValueError(
            f"`solver` {type(solver).__name__} has no error estimate, so it cannot take "
            "adaptive steps: pass `num_steps` for a fixed-step solve, or an adaptive "
            "solver such as diffrax.Tsit5()."
        )
    tols = []
    for name, x in (("rtol", rtol), ("atol", atol)):
        x = default_tolerance(dtype) if x is None else float(x)
        if not x > 0 or not np.isfinite(x):
            raise ValueError(f"`{name}` must be a positive number, got {x}.")
        tols.append(x)
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or int(max_steps) < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
    return tols[0], tols[1], num_steps, int(max_steps)


def solve_in_depth(
    field: Callable,
    y0: PyTree,
    args: PyTree,
    *,
    solver: dfx.AbstractSolver,
    adjoint: dfx.AbstractAdjoint,
    rtol: float,
    atol: float,
    num_steps: int | None,
    max_steps: int,
    ts=None,
) -> PyTree:
    r"""Solve $y'(s) = $ `field(s, y, args)` on $[0, 1]$ from $y(0) = y_0$.

    Returns $y(1)$, or $y$ at `ts` (leading axis) when given. The parameters must be in
    `args` (not closed over), so that every adjoint differentiates with respect to them.
    Adaptive steps (PID controller) unless `num_steps` is set, in which case the steps
    are exactly $s_k = k/$`num_steps` (so `DirectAdjoint`'s memory, which is sized by
    `max_steps`, is sized by the number of steps).
    """
    if num_steps is None:
        controller = dfx.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    else:
        # Constant steps of exactly 1/num_steps (no extra sliver of a step at s = 1).
        controller = dfx.ConstantStepSize()
        dt0 = 1.0 / num_steps
        max_steps = num_steps + 1
    saveat = dfx.SaveAt(t1=True) if ts is None else dfx.SaveAt(ts=ts)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        solver,
        0.0,
        1.0,
        dt0,
        y0,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=max_steps,
    )
    if ts is None:
        return jax.tree.map(lambda y: y[0], sol.ys)
    return sol.ys


def options_of(model) -> dict:
    """The depth-solve options stored on a continuous-depth model (its fields `solver`,
    `adjoint`, `rtol`, `atol`, `num_steps`, `max_steps`), as keywords of `solve_in_depth`."""
    names = ("solver", "adjoint", "rtol", "atol", "num_steps", "max_steps")
    return {name: getattr(model, name) for name in names}
