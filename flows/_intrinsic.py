"""The intrinsic flow z' = −K(z)∇f(z)."""

from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, PyTree, Real, Scalar

import manifolds
from models._custom_types import RealScalarLike

from ._integrate import integrate
from ._output_loss import OutputLoss
from ._solution import FlowSolution


class _IntrinsicField(eqx.Module):
    K: Callable
    f: Callable

    def __call__(self, z, args=None):
        return jax.tree.map(jnp.negative, self.K(z).mv(jax.grad(self.f)(z)))


class _PathLoss(eqx.Module):
    # The loss of a ReLU network as a function of its path-lifting z on one region of
    # activation pattern: g(x) = Σ_p z_p a_p(x) x_start(p), a = `pattern` on the inputs.
    K: Callable
    f: OutputLoss

    def __call__(self, z, pattern):
        network = self.K.network
        patterns = pattern.reshape(self.f.inputs.shape[0], -1)
        outputs = jax.vmap(lambda x, a: network.predict_from_lift(z, a, x))(self.f.inputs, patterns)
        return self.f.loss(outputs, self.f.targets)


class _PathField(eqx.Module):
    loss: _PathLoss

    def __call__(self, z, pattern):
        grad = jax.grad(self.loss)(z, pattern)
        return jax.tree.map(jnp.negative, self.loss.K(z).mv(grad))


class _PathSave(eqx.Module):
    loss: _PathLoss

    def __call__(self, z, pattern):
        return {"z": z, "loss": self.loss(z, pattern)}


class _RecoveredPreactivations(eqx.Module):
    # The activation pattern is a function of the recovered θ(z): the signs of the
    # hidden pre-activations of the network on the fiber over z.
    K: Callable
    inputs: Array

    def __call__(self, z):
        network = self.K.recover(z)
        return jax.vmap(network.preactivations)(self.inputs).reshape(-1)


class _IntrinsicSave(eqx.Module):
    f: Callable

    def __call__(self, z, args=None):
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
    max_events: int = 100,
) -> FlowSolution:
    r"""Integrate the intrinsic (Riemannian) gradient flow on $z$.

    $$z'(t) = -K(z(t))\,\nabla f(z(t)), \qquad z(t_0) = z_0.$$

    When the Euclidean flow is intrinsic with metric $K$ on the level set of $\theta_0$ and
    $z_0 = \varphi(\theta_0)$, this reproduces $\varphi(\theta(t))$ of
    [`flows.euclidean_flow`][] while integrating only $d$ instead of $D$ variables.

    **Arguments:**

    - `K`: $z \mapsto K(z)$, a `lineax` operator on $z$-shaped arrays; typically
      `manifolds.intrinsic_metric(model)`.
    - `f`: the loss as a function of $z$, returning a scalar. Or, with the metric of a
      ReLU network as `K`, an [`flows.OutputLoss`][]: the network's outputs are then
      computed from $z$ with the activation pattern of the network recovered from $z$
      (`K.recover(z)`), which is recomputed at each change of pattern on the inputs
      (a `diffrax.Event`; the times are in `solution.event_times`).
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

    switching = None
    if isinstance(f, OutputLoss):
        if not isinstance(K, getattr(manifolds, "AbstractReLUMetric", ())):  # TEMP
            raise TypeError(
                "An `OutputLoss` in the intrinsic flow needs the metric of a ReLU network "
                "(`manifolds.intrinsic_metric(network)`), which knows the network's "
                f"structure and recovers its activation pattern from z; got {type(K).__name__}."
            )
        loss = _PathLoss(K, f)
        field, save = _PathField(loss), _PathSave(loss)
        switching = _RecoveredPreactivations(K, f.inputs)
    else:
        field, save = _IntrinsicField(K, f), _IntrinsicSave(f)
    return integrate(
        field,
        z0,
        save,
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
        switching=switching,
        max_events=max_events,
    )
