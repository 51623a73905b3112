"""The intrinsic flow z' = −K(z)∇f(z)."""

from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, PyTree, Real, Scalar

from models._custom_types import RealScalarLike

from ._integrate import integrate
from ._solution import FlowSolution


class _IntrinsicField(eqx.Module):
    K: Callable
    f: Callable

    def __call__(self, z):
        return jax.tree.map(jnp.negative, self.K(z).mv(jax.grad(self.f)(z)))


class _IntrinsicSave(eqx.Module):
    f: Callable

    def __call__(self, z):
        return {"z": z, "loss": self.f(z)}


def intrinsic_flow(
    K: Callable[[PyTree[Array]], lx.AbstractLinearOperator],
    f: Callable[[PyTree[Array]], Scalar],
    z0: PyTree[ArrayLike],
    t1: RealScalarLike,
    *,
    t0: RealScalarLike = 0.0,
    ts: Real[ArrayLike, " T"] | Sequence[float] | None = None,
    solver: dfx.AbstractAdaptiveSolver = dfx.Tsit5(),
    rtol: RealScalarLike = 1e-8,
    atol: RealScalarLike = 1e-8,
    dt0: RealScalarLike | None = None,
    max_steps: int | None = 100_000,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    progress: bool = False,
    throw: bool = True,
) -> FlowSolution:
    r"""Integrate the intrinsic (Riemannian) gradient flow on $z$.

    $$z'(t) = -K(z(t))\,\nabla f(z(t)), \qquad z(t_0) = z_0.$$

    When the Euclidean flow is intrinsic with metric $K$ on the level set of $\theta_0$ and
    $z_0 = \varphi(\theta_0)$, this reproduces $\varphi(\theta(t))$ of
    [`flows.euclidean_flow`][] while integrating only $d$ instead of $D$ variables.

    **Arguments:**

    - `K`: $z \mapsto K(z)$, a `lineax` operator on $z$-shaped arrays; typically
      `manifolds.intrinsic_metric(model)`.
    - `f`: the loss as a function of $z$, returning a scalar.
    - `z0`: the initial state, e.g. `model.lift()`.
    - the other arguments are those of [`flows.euclidean_flow`][].

    **Returns:** a [`flows.FlowSolution`][] with `conserved=None`.
    """
    if not callable(K) or not callable(f):
        raise TypeError("`K` and `f` must be callables (z -> operator, z -> scalar).")
    z0 = jax.tree.map(jnp.asarray, z0)
    leaves = jax.tree.leaves(z0)
    if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
        raise TypeError("`z0` must be a (PyTree of) floating array(s).")
    for x in leaves:
        if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"`z0` must be finite, got an array with non-finite entries: {x}.")

    return integrate(
        _IntrinsicField(K, f),
        z0,
        _IntrinsicSave(f),
        t0,
        t1,
        ts,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        max_steps=max_steps,
        adjoint=adjoint,
        progress=progress,
        throw=throw,
    )
