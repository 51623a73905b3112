"""The Euclidean gradient flow θ' = −∇_θ f(φ(θ))."""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree, Scalar

from manifolds import laws_function, lifting_function
from models import AbstractFactorization, AbstractReLUNetwork
from models._custom_types import RealScalarLike

from ._integrate import integrate, solve
from ._options import DEFAULT_CONTROLLER, check_static_options, normalise_options
from ._output_loss import OutputLoss
from ._solution import RESULTS, FlowSolution, SaveAt


# Vector field and saved summary as Modules rather than closures: `integrate` is
# `filter_jit`-ed, and Modules built from equal pieces hit its cache, so a second flow
# on a same-shaped model (or with another t1, ts or tolerance) does not recompile.
class _EuclideanField(eqx.Module):
    phi: Callable
    f: Callable

    def __call__(self, theta, args):
        grad = jax.grad(lambda p: self.f(self.phi(p), args))(theta)
        return jax.tree.map(jnp.negative, grad)


class _NetworkField(eqx.Module):
    # θ' = −∇ℓ(θ) for a loss on the network's outputs (an `OutputLoss`).
    skeleton: AbstractFactorization
    f: OutputLoss

    def __call__(self, theta, args):
        grad = jax.grad(lambda p: self.f(eqx.combine(p, self.skeleton), args))(theta)
        return jax.tree.map(jnp.negative, grad)


class _Piecewise(eqx.Module):
    # Inside a piecewise flow the solver's `args` are `(args, piece)`; the field and the
    # summary of a Euclidean flow only need the user's `args` (the pattern is implicit
    # in θ).
    fn: Callable

    def __call__(self, theta, args):
        return self.fn(theta, args[0])


class _NetworkLoss(eqx.Module):
    # z ↦ loss is not defined for an `OutputLoss`; the saved loss is ℓ(θ).
    skeleton: AbstractFactorization
    f: OutputLoss

    def __call__(self, theta, args):
        return self.f(eqx.combine(theta, self.skeleton), args)


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

    def __call__(self, theta, args):
        z = self.phi(theta)
        loss = self.f(theta, args) if self.loss_of_theta else self.f(z, args)
        out = {"z": z, "loss": loss, "laws": self.h(theta)}
        if self.save_params:
            out["params"] = theta
        return out


def euclidean_flow(
    model: AbstractFactorization,
    f: Callable[[PyTree[Array], Any], Scalar] | OutputLoss,
    t0: RealScalarLike,
    t1: RealScalarLike,
    *,
    args: PyTree = None,
    solver: dfx.AbstractSolver = dfx.Tsit5(),
    stepsize_controller: dfx.AbstractStepSizeController = DEFAULT_CONTROLLER,
    dt0: RealScalarLike | None = None,
    saveat: SaveAt = SaveAt(t0=True, t1=True),
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    max_steps: int | None = 100_000,
    throw: bool = True,
    progress_meter: dfx.AbstractProgressMeter = dfx.NoProgressMeter(),
    max_events: int = 100,
) -> FlowSolution:
    r"""Integrate the Euclidean gradient flow of $\ell(\theta) = f(\varphi(\theta), \text{args})$.

    $$\theta'(t) = -\nabla_\theta \ell(\theta(t))
    = -\partial\varphi(\theta)^\top \nabla f(\varphi(\theta)),
    \qquad \theta(t_0) = \theta_0,$$

    with `diffrax.diffeqsolve`. Only $z = \varphi(\theta)$, the loss and the conserved
    quantities $h(\theta)$ are saved (through `SubSaveAt(fn=...)`), plus $\theta$ itself
    with `SaveAt(params=True)`; the model at $t_1$ is `solution.final`.

    Safe under `jax.jit`, `jax.vmap` and `jax.grad` (with respect to the model, `args`,
    the times): times, tolerances and `args` are traced values, so new values of them
    recompile nothing. The exception is a ReLU network on data (an
    [`flows.OutputLoss`][]), whose flow restarts on the host at each change of
    activation pattern.

    **Main arguments:**

    - `model`: the factorization at $\theta_0$.
    - `f`: the loss `f(z, args)` of $z$ (same structure as `model.lift()`), returning a
      scalar. Pass the data in `args`, not in a closure: a new closure is a new
      function and recompiles the flow. Or an [`flows.OutputLoss`][]: a loss on the
      outputs of the network `model` on a dataset (for a ReLU network, whose loss is not a
      function of $z$ alone).
    - `t0`, `t1`: the time span, $t_0 < t_1$.
    - `args`: any PyTree, passed to `f`.
    - `saveat`: a [`flows.SaveAt`][]: when to save the summaries (default: at $t_0$ and
      $t_1$).

    **Other arguments:**

    - `solver`: any diffrax solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: any diffrax step-size controller (default
      `diffrax.PIDController(rtol=1e-8, atol=1e-8)`, or 100 ε of the float dtype where that
      is larger: 1.2e-5 in float32). A solver without an error estimate
      (`diffrax.Euler()`) needs `diffrax.ConstantStepSize()` and a `dt0`.
    - `dt0`: the initial (or, with `ConstantStepSize`, the fixed) step; default chosen by
      the solver.
    - `adjoint`: how `jax.grad` differentiates through the solve:
      `diffrax.RecursiveCheckpointAdjoint()` (default), `diffrax.DirectAdjoint()`, or
      `diffrax.ForwardMode()` (for `jax.jvp`/`jax.jacfwd`). `diffrax.BacksolveAdjoint`
      and `diffrax.ImplicitAdjoint` are refused (they cannot differentiate the saved
      summaries / a finite-time flow).
    - `max_steps`: the solver's step budget.
    - `throw`: raise on failure (also under `jit`, through `eqx.error_if`). With
      `throw=False` the failure is in `solution.result` (`solution.succeeded` under
      `jit`, `solution.message` on the host) and unsaved times hold `inf`.
    - `progress_meter`: a diffrax progress meter, e.g. `diffrax.TqdmProgressMeter()`.
    - `max_events`: for a ReLU network with an [`flows.OutputLoss`][], the most changes
      of activation pattern allowed before `t1` (each one stops the solve, which
      restarts with the new pattern; their times are in `solution.event_times`).

    **Returns:** a [`flows.FlowSolution`][] with `conserved` = $h(\theta(t))$ and
    `final` = the model at $t_1$.

    **Raises:** `TypeError`/`ValueError` for bad options (before any work); a runtime
    error naming the failure (non-finite initial state, maximum steps, non-finite
    state) when `throw=True` and the solve fails.
    """
    options = normalise_options(
        t0=t0,
        t1=t1,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        saveat=saveat,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
        progress_meter=progress_meter,
        max_events=max_events,
    )
    if not isinstance(model, AbstractFactorization):
        raise TypeError(
            f"`model` must be a models.AbstractFactorization, got {type(model).__name__}."
        )
    if not callable(f):
        raise TypeError(f"`f` must be a callable (z, args) -> scalar loss, got {f!r}.")
    if isinstance(f, OutputLoss) and not callable(model):
        raise TypeError(
            "An `OutputLoss` needs a network: `model` must be callable on one input, "
            f"but {type(model).__name__} has no `__call__`. Pass a loss of z instead."
        )
    if isinstance(f, OutputLoss) and isinstance(model, AbstractReLUNetwork):
        check_static_options(**options)
        return _piecewise_flow(model, f, args, {**options, "max_events": int(max_events)})
    return _smooth_flow(model, f, args, options)


# The whole smooth flow is one compiled call: the Modules of the vector field and the
# summary, the solve and the model rebuilt around θ(t) are traced once, so a warm call
# costs the options' host-side checks and one dispatch.
def _smooth_flow(model, f, args, options) -> FlowSolution:
    arrays, (treedef, others) = _compiled_flow(model, f, args, options)
    arrays = iter(arrays)
    return jax.tree.unflatten(treedef, [next(arrays) if x is None else x for x in others])


@eqx.filter_jit
def _compiled_flow(model, f, args, options):
    check_static_options(**options)  # while tracing: once per compilation
    theta0, static = eqx.partition(model, eqx.is_inexact_array)
    vector_field, save = _field_and_save(model, f, options["saveat"].params)
    sol, theta1, _ = solve(vector_field, theta0, save, args, cond=None, **options)
    sol = _with_model(sol, theta1, static, options["throw"])
    # The solution as its array leaves and a static rest, rebuilt by `_smooth_flow`:
    # `filter_jit` would otherwise recombine the whole tree on every call (tens of µs).
    leaves, treedef = jax.tree.flatten(sol)
    arrays = [x for x in leaves if eqx.is_array(x)]
    return arrays, (treedef, tuple(None if eqx.is_array(x) else x for x in leaves))


def _piecewise_flow(model, f, args, options):
    # A ReLU network on data: the flow restarts on the host at each change of pattern.
    theta0, static = eqx.partition(model, eqx.is_inexact_array)
    vector_field, save = _field_and_save(model, f, options["saveat"].params)
    switching = _Preactivations(static, f.inputs)
    sol, theta1 = integrate(
        _Piecewise(vector_field),
        theta0,
        _Piecewise(save),
        options=options,
        args=args,
        switching=switching,
    )
    return _with_model(sol, theta1, static, options["throw"])


def _field_and_save(model, f, save_params: bool):
    phi, _ = lifting_function(model)
    h, _ = laws_function(model)
    if isinstance(f, OutputLoss):
        skeleton = eqx.partition(model, eqx.is_inexact_array)[1]
        vector_field = _NetworkField(skeleton, f)
        save = _EuclideanSave(phi, h, _NetworkLoss(skeleton, f), save_params, True)
    else:
        vector_field = _EuclideanField(phi, f)
        save = _EuclideanSave(phi, h, f, save_params)
    return vector_field, save


def _with_model(sol: FlowSolution, theta1, static, throw: bool) -> FlowSolution:
    # The solve works on θ, the array leaves; the solution carries models.
    if throw:
        # The failure check rides on the saved summaries; under `jit` a caller who keeps
        # only `solution.final` would otherwise drop it and get NaNs without an error.
        theta1 = sol.result.error_if(theta1, sol.result != RESULTS.successful)
    sol = eqx.tree_at(lambda s: s.final, sol, eqx.combine(theta1, static), is_leaf=_is_none)
    if sol.params is not None:
        sol = eqx.tree_at(
            lambda s: s.params, sol, eqx.combine(sol.params, static), is_leaf=_is_none
        )
    return sol


def _is_none(x) -> bool:
    return x is None
