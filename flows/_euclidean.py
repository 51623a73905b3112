"""The Euclidean gradient flow θ' = −∇_θ f(φ(θ))."""

from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, PyTree, Real, Scalar

from manifolds import laws_function, lifting_function
from models import AbstractFactorization, AbstractReLUNetwork
from models._custom_types import RealScalarLike

from ._integrate import integrate
from ._output_loss import OutputLoss
from ._solution import FlowSolution


# Vector field and saved summary as Modules rather than closures: `integrate` is
# `filter_jit`-ed, and Modules built from equal pieces hit its cache, so a second flow
# on a same-shaped model (or with another t1, ts or tolerance) does not recompile.
class _EuclideanField(eqx.Module):
    phi: Callable
    f: Callable

    def __call__(self, theta, args=None):
        grad = jax.grad(lambda p: self.f(self.phi(p)))(theta)
        return jax.tree.map(jnp.negative, grad)


class _NetworkField(eqx.Module):
    # θ' = −∇ℓ(θ) for a loss on the network's outputs (an `OutputLoss`).
    skeleton: AbstractFactorization
    f: OutputLoss

    def __call__(self, theta, args=None):
        grad = jax.grad(lambda p: self.f(eqx.combine(p, self.skeleton)))(theta)
        return jax.tree.map(jnp.negative, grad)


class _NetworkLoss(eqx.Module):
    # z ↦ loss is not defined for an `OutputLoss`; the saved loss is ℓ(θ).
    skeleton: AbstractFactorization
    f: OutputLoss

    def __call__(self, theta):
        return self.f(eqx.combine(theta, self.skeleton))


class _Preactivations(eqx.Module):
    # The switching functions of a ReLU network on the data: every hidden
    # pre-activation at every input (their signs are the activation pattern), and
    # every weight.
    skeleton: AbstractFactorization
    inputs: Array

    def __call__(self, theta, extra=None):
        network = eqx.combine(theta, self.skeleton)
        pre = jax.vmap(network.preactivations)(self.inputs).reshape(-1)
        # The weights too: the field is smooth across a weight's zero, but the intrinsic
        # flow restarts there (new weight signs), so both flows list the same events.
        return jnp.concatenate([pre, ravel_pytree(theta)[0]])


class _EuclideanSave(eqx.Module):
    phi: Callable
    h: Callable
    f: Callable
    save_params: bool = eqx.field(static=True)
    loss_of_theta: bool = eqx.field(static=True, default=False)

    def __call__(self, theta, args=None):
        z = self.phi(theta)
        loss = self.f(theta) if self.loss_of_theta else self.f(z)
        out = {"z": z, "loss": loss, "laws": self.h(theta)}
        if self.save_params:
            out["params"] = theta
        return out


def euclidean_flow(
    model: AbstractFactorization,
    f: Callable[[PyTree[Array]], Scalar],
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
    save_params: bool = False,
    max_events: int = 100,
) -> FlowSolution:
    r"""Integrate the Euclidean gradient flow of $\ell(\theta) = f(\varphi(\theta))$.

    $$\theta'(t) = -\nabla_\theta \ell(\theta(t)) = -\partial\varphi(\theta)^\top \nabla f(\varphi(\theta)),
    \qquad \theta(t_0) = \theta_0,$$

    with `diffrax.diffeqsolve` and an adaptive step size. Only
    $z = \varphi(\theta)$, the loss and the conserved quantities $h(\theta)$ are saved at `ts`
    (through `SaveAt(fn=...)`), plus $\theta$ itself if `save_params=True`.

    **Arguments:**

    - `model`: the factorization at $\theta_0$.
    - `f`: the loss as a function of $z$ (same structure as `model.lift()`), returning a
      scalar; it carries the data. Or an [`flows.OutputLoss`][]: a loss on the outputs
      of the network `model` on a dataset (for a ReLU network, whose loss is not a
      function of $z$ alone).
    - `t1`: the final time.
    - `t0`: the initial time.
    - `ts`: times at which to save, in $[t_0, t_1]$; default `[t0, t1]`.
    - `solver`: any adaptive diffrax solver.
    - `rtol`, `atol`: tolerances of the `diffrax.PIDController`.
    - `dt0`: initial step (default: chosen by the solver).
    - `max_steps`: the solver's step budget.
    - `adjoint`: how to differentiate through the solve.
    - `progress`: show a `tqdm` progress bar.
    - `throw`: raise on solver failure. With `throw=False`, failure is reported in
      `solution.result` / `solution.message`, and unsaved times hold `inf`.
    - `save_params`: also save the model at `ts`.
    - `max_events`: for a ReLU network with an [`flows.OutputLoss`][], the most changes
      of activation pattern allowed before `t1` (each one stops the solve, which
      restarts with the new pattern; their times are in `solution.event_times`).

    **Returns:** a [`flows.FlowSolution`][] with `conserved` = $h(\theta(t))$.

    **Raises:** `ValueError` for bad options; a runtime error naming the failure
    (maximum steps, non-finite state) when `throw=True` and the solve fails.
    """
    phi, theta0 = lifting_function(model)
    h, _ = laws_function(model)
    if not callable(f):
        raise TypeError(f"`f` must be a callable z -> scalar loss, got {type(f).__name__}.")

    switching = None
    if isinstance(f, OutputLoss):
        if not callable(model):
            raise TypeError(
                "An `OutputLoss` needs a network: `model` must be callable on one input, "
                f"but {type(model).__name__} has no `__call__`. Pass a loss of z instead."
            )
        skeleton = eqx.partition(model, eqx.is_inexact_array)[1]
        vector_field = _NetworkField(skeleton, f)
        save = _EuclideanSave(phi, h, _NetworkLoss(skeleton, f), save_params, True)
        if isinstance(model, AbstractReLUNetwork):
            switching = _Preactivations(skeleton, f.inputs)
    else:
        vector_field = _EuclideanField(phi, f)
        save = _EuclideanSave(phi, h, f, save_params)
    sol = integrate(
        vector_field,
        theta0,
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
    if save_params:
        _, static = eqx.partition(model, eqx.is_inexact_array)
        sol = eqx.tree_at(
            lambda s: s.params, sol, eqx.combine(sol.params, static), is_leaf=lambda x: x is None
        )
    return sol
