"""The intrinsic flow z' = −K(z)∇f(z)."""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, PyTree, Scalar

from manifolds import AbstractReLUMetric
from models import AbstractReLUNetwork
from models._checks import as_float_tree, check_finite
from models._custom_types import RealScalarLike

from ._euclidean import DEFAULT_CONTROLLER
from ._integrate import integrate
from ._options import check_options
from ._output_loss import OutputLoss
from ._solution import RESULTS, FlowSolution, SaveAt


class _IntrinsicField(eqx.Module):
    K: Callable
    f: Callable
    # A finite state to evaluate K at instead of a non-finite one: the metrics refuse a
    # non-finite z (`eqx.error_if`), which inside the solve must be a rejected step or a
    # result code (`throw=False`), never an exception.
    fallback: PyTree[Array]

    def __call__(self, z, args):
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(z)]))
        safe = jax.tree.map(lambda x, x0: jnp.where(finite, x, x0), z, self.fallback)
        out = self.K(safe).mv(jax.grad(self.f)(safe, args))
        return jax.tree.map(lambda x: jnp.where(finite, -x, jnp.nan), out)


class _PathLoss(eqx.Module):
    # The loss of a ReLU network as a function of its path-lifting z on one region of
    # activation pattern: g(x) = Σ_p z_p a_p(x) x_start(p), a = `active` on the inputs.
    network: AbstractReLUNetwork
    f: OutputLoss

    def __call__(self, z, active, args):
        patterns = active.reshape(self.f.inputs.shape[0], -1)
        outputs = jax.vmap(lambda x, a: self.network.predict_from_lift(z, a, x))(
            self.f.inputs, patterns
        )
        return self.f.loss(outputs, self.f.targets, args)


class _Signed(eqx.Module):
    # The metric with the weight signs of the current piece. K(z) and θ(z) are read
    # at |z| ⊙ (the path signs those weights give): exact inside the piece, and well
    # defined at its ends, where a weight crossing zero leaves the paths through it a
    # rounding error on either side of zero.
    K: AbstractReLUMetric

    def metric(self, signs):
        return eqx.tree_at(lambda k: k.signs, self.K, signs)

    def path_signs(self, signs):
        params, static = eqx.partition(self.K.network, eqx.is_inexact_array)
        return eqx.combine(ravel_pytree(params)[1](signs), static).lift()

    def sanitize(self, z, signs):
        return jax.tree.map(lambda a, s: jnp.abs(a) * s, z, self.path_signs(signs))

    def recover(self, z, signs):
        return self.metric(signs).recover(self.sanitize(z, signs))


class _PathField(eqx.Module):
    loss: _PathLoss
    signed: _Signed
    num_active: int = eqx.field(static=True)

    def __call__(self, z, args):
        args, (pattern, signs) = args
        grad = jax.grad(self.loss)(z, pattern[: self.num_active], args)
        K = self.signed.metric(signs)(self.signed.sanitize(z, signs))
        return jax.tree.map(jnp.negative, K.mv(grad))


class _PathSave(eqx.Module):
    loss: _PathLoss
    num_active: int = eqx.field(static=True)

    def __call__(self, z, args):
        args, (pattern, _) = args
        return {"z": z, "loss": self.loss(z, pattern[: self.num_active], args)}


class _PathSwitching(eqx.Module):
    # Two kinds of switching functions: the hidden pre-activations of the recovered
    # network θ(z) on the inputs (the activation pattern), and z_p times the sign its
    # path should have (a weight crossing zero flips the signs of its paths).
    signed: _Signed
    inputs: Array

    def __call__(self, z, signs):
        network = self.signed.recover(z, signs)
        pre = jax.vmap(network.preactivations)(self.inputs).reshape(-1)
        path = ravel_pytree(z)[0] * ravel_pytree(self.signed.path_signs(signs))[0]
        return jnp.concatenate([pre, path])


def _path_event(signed, num_active):
    def on_event(z, pattern, signs, crossed):
        pattern = pattern.copy()
        if np.all(crossed < num_active):  # a change of activation pattern
            pattern[crossed] = ~pattern[crossed]
            return pattern, signs
        # A weight crossed zero: the smallest one of θ(z) (its paths are ~0). Only the
        # signs change: near a zero weight, θ(z) is recovered from z_p ~ 0 known to the
        # solver's absolute tolerance only, so the pre-activations read off it there
        # are not trusted to flip anything.
        theta = signed.recover(z, signs)
        flat = np.abs(np.asarray(ravel_pytree(eqx.filter(theta, eqx.is_inexact_array))[0]))
        signs = jnp.asarray(signs).at[int(np.argmin(flat))].multiply(-1)
        pattern[num_active:] = True
        return pattern, signs

    return on_event


class _IntrinsicSave(eqx.Module):
    f: Callable

    def __call__(self, z, args):
        return {"z": z, "loss": self.f(z, args)}


def intrinsic_flow(
    K: Callable[[PyTree[Array]], lx.AbstractLinearOperator],
    f: Callable[[PyTree[Array], Any], Scalar] | OutputLoss,
    t0: RealScalarLike,
    t1: RealScalarLike,
    z0: PyTree[ArrayLike],
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
    r"""Integrate the intrinsic (Riemannian) gradient flow on $z$.

    $$z'(t) = -K(z(t))\,\nabla f(z(t), \text{args}), \qquad z(t_0) = z_0.$$

    When the Euclidean flow is intrinsic with metric $K$ on the level set of $\theta_0$ and
    $z_0 = \varphi(\theta_0)$, this reproduces $\varphi(\theta(t))$ of
    [`flows.euclidean_flow`][] while integrating only $d$ instead of $D$ variables.
    Safe under `jax.jit`, `jax.vmap` and `jax.grad` (with respect to $z_0$, the metric's
    conserved values, `args`, the times), as [`flows.euclidean_flow`][] is.

    **Main arguments:**

    - `K`: $z \mapsto K(z)$, a `lineax` operator on $z$-shaped arrays; typically
      `manifolds.intrinsic_metric(model)`.
    - `f`: the loss `f(z, args)`, returning a scalar. Or, with the metric of a
      ReLU network as `K`, an [`flows.OutputLoss`][]: the network's outputs are then
      computed from $z$ with the activation pattern of the network recovered from $z$
      (`K.recover(z)`), which is recomputed at each change of pattern on the inputs
      (a `diffrax.Event`; the times are in `solution.event_times`). A weight of
      $\theta(z)$ crossing zero is an event too: the weight signs are updated and the
      flow continues. Where such a crossing makes a hidden neuron's whole block of
      paths vanish (e.g. the output weight of a single-output neuron), $z$ carries no
      information on the direction of that neuron's other weights at that instant
      (the fibre over $z_j = 0$ is a sphere), and the intrinsic flow follows the
      Euclidean one only as accurately as the solver resolves $z_j \approx 0$.
    - `t0`, `t1`: the time span.
    - `z0`: the initial state, e.g. `model.lift()`.
    - `args`, `saveat`: as for [`flows.euclidean_flow`][].

    **Other arguments:** those of [`flows.euclidean_flow`][].

    **Returns:** a [`flows.FlowSolution`][] with `conserved=None` and `final` = $z(t_1)$.
    """
    options = check_options(
        t0=t0,
        t1=t1,
        args=args,
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
    if not callable(K):
        raise TypeError(
            "`K` must be a metric z -> lineax operator (e.g. "
            f"`manifolds.intrinsic_metric(model)`), got {K!r}."
        )
    if not callable(f):
        raise TypeError(f"`f` must be a callable (z, args) -> scalar loss, got {f!r}.")
    z0 = _check_state(z0, options["throw"])
    if saveat.params:
        raise ValueError(
            "`SaveAt(params=True)` saves the model of a Euclidean flow; the intrinsic "
            "flow has no parameters (its state z is in `solution.zs`)."
        )
    _check_operator(K, z0)

    switching, piecewise = None, {}
    if isinstance(f, OutputLoss):
        if not isinstance(K, AbstractReLUMetric):
            raise TypeError(
                "An `OutputLoss` in the intrinsic flow needs the metric of a ReLU network "
                "(`manifolds.intrinsic_metric(network)`), which knows the network's "
                f"structure and recovers its activation pattern from z; got {type(K).__name__}."
            )
        loss = _PathLoss(K.network, f)
        signed = _Signed(K)
        num_active = f.inputs.shape[0] * K.network.num_hidden
        field, save = _PathField(loss, signed, num_active), _PathSave(loss, num_active)
        switching = _PathSwitching(signed, f.inputs)
        piecewise = dict(extra=K.signs, on_event=_path_event(signed, num_active))
    else:
        field, save = _IntrinsicField(K, f, z0), _IntrinsicSave(f)
    sol, z1 = integrate(
        field, z0, save, options=options, args=args, switching=switching, **piecewise
    )
    if options["throw"]:  # as in `euclidean_flow`: `final` alone keeps the check
        z1 = sol.result.error_if(z1, sol.result != RESULTS.successful)
    return eqx.tree_at(lambda s: s.final, sol, z1, is_leaf=lambda x: x is None)


def _check_state(z0, throw):
    z0 = as_float_tree(z0, "z0")
    leaves = jax.tree.leaves(z0)
    for x in leaves:
        # NumPy on a concrete array: jnp would stage out a tracer inside an outer jit.
        if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(
                f"`z0` must be finite, got an array of shape {x.shape} with "
                f"{int(np.sum(~np.isfinite(np.asarray(x))))} non-finite entries."
            )
    if throw:  # a traced z0 is checked when the flow runs, under its own name
        z0 = jax.tree.map(
            lambda x: check_finite(x, "z0") if isinstance(x, jax.core.Tracer) else x, z0
        )
    return z0


def _check_operator(K, z0):
    # Trace the metric once at z0 (shapes only): a K that does not return a lineax
    # operator on z-shaped arrays is an error here, not deep inside the solve.
    try:
        op = eqx.filter_eval_shape(K, z0)
    except Exception as e:  # the metric's own error is the informative one
        raise type(e)(f"Evaluating `K(z0)` failed: {e}") from e
    if not isinstance(op, lx.AbstractLinearOperator):
        raise TypeError(
            "`K(z)` must return a lineax linear operator (e.g. `lineax.MatrixLinearOperator`), "
            f"got {type(op).__name__}."
        )
    struct = jax.tree.map(lambda x: (x.shape, x.dtype), op.in_structure())
    expected = jax.tree.map(lambda x: (x.shape, x.dtype), z0)
    if jax.tree.structure(op.in_structure()) != jax.tree.structure(z0) or jax.tree.leaves(
        struct
    ) != jax.tree.leaves(expected):
        raise ValueError(
            f"`K(z0)` acts on arrays shaped {struct}, but `z0` is shaped {expected}: "
            "check that `z0` is `model.lift()` of the model the metric was built for "
            "(not transposed)."
        )
