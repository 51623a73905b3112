"""The generic intrinsic metric K(z) = M(θ(z)), with θ(z) recovered by a nonlinear solve."""

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, PyTree

from models import AbstractFactorization
from models._checks import check_positive_int, check_tolerance

from ._induced_metric import induced_metric
from ._intrinsic_metric import AbstractIntrinsicMetric, default_rtol
from ._lifting import laws_function, lifting_function


def _norm(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(x**2) for x in leaves)) if leaves else jnp.asarray(0.0)


class RecoveredRESULTS(optx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """The outcomes of [`manifolds.RecoveredMetric`][]'s solve."""

    not_on_fibre = (
        "RecoveredMetric: no theta with phi(theta) = z, h(theta) = c was found from the "
        "warm start (residual norm above atol + rtol*(|z| + |c|), or not finite). z may "
        "lie outside the level set's reach (e.g. rank z > r for U V^T), be non-finite, or "
        "be too far from the warm start: re-centre with `with_warm_start`, raise "
        "`max_steps`, or pass throw=False (then `recover_with_result` gives the code)."
    )


class RecoveredMetric(AbstractIntrinsicMetric):
    r"""The intrinsic metric of any factorization, by recovering $\theta$ from $(z, c)$.

    $$K(z) = M(\theta^\star(z)), \qquad \theta^\star(z) \in \{\theta : \varphi(\theta) = z,\
    h(\theta) = c\}, \quad c = h(\theta_0),$$

    with $\theta^\star$ found by a nonlinear least-squares solve of
    $\min_\theta \|\varphi(\theta) - z\|^2 + \|h(\theta) - c\|^2$ started from the stored
    $\theta_0$ (Levenberg–Marquardt by default: the Jacobian is rank-deficient wherever
    the fiber has positive dimension, which Gauss–Newton's default LU/QR step is not for).
    No closed form is needed; where the intrinsic metric property holds, every point of
    the fiber gives the same $M$, so the answer does not depend on which one is found
    (check this with [`manifolds.fiber_consistency`][]). Where it does not hold, $K$
    silently depends on the solver's choice: it is then *a* metric, not *the* metric.

    A solve is accepted when $\|(\varphi(\theta) - z, h(\theta) - c)\|_2 \le
    \mathrm{atol} + \mathrm{rtol}\,(\|z\| + \|c\|)$ and finite; otherwise $K(z)$ is never
    silently returned (see `throw`). Typical failures: $z$ outside what the level set
    reaches (for $UV^\top$, $\mathrm{rank}\,z > r$), non-finite $z$, or $z$ too far from
    $\varphi(\theta_0)$ for the solve to converge from $\theta_0$.

    !!! warning "Warm start"
        $K$ is a pure function of $z$: inside [`flows.intrinsic_flow`][] it runs in a
        traced, compiled vector field, where no "last solution" can be remembered. Every
        call starts from the same $\theta_0$, which is robust (no state, reproducible,
        any solution on the level set is as good as another) but works only as long as
        the solve converges from $\theta_0$, and costs more iterations as $z$ moves away.
        For long trajectories, integrate in segments and re-centre in between:
        `K = K.with_warm_start(K.recover(z_end)[0])` keeps $c$ and moves $\theta_0$.

    Differentiation with respect to $z$ (e.g. for an implicit ODE solver or
    [`manifolds.mirror_flow_test`][]) goes through the implicit function theorem with a
    pseudo-inverse, i.e. along the minimum-norm selection $\theta^\star(z)$; this gives
    $\partial K$ correctly wherever the intrinsic metric property holds.
    """

    model: AbstractFactorization
    laws: PyTree[Array]
    solver: optx.AbstractLeastSquaresSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        model: AbstractFactorization,
        *,
        solver: optx.AbstractLeastSquaresSolver | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 256,
        throw: bool = True,
    ):
        r"""**Arguments:**

        - `model`: the factorization at $\theta_0$: fixes the level set $c = h(\theta_0)$
          and is the warm start of every solve.
        - `solver`: an `optimistix` least-squares solver; default
          `optx.LevenbergMarquardt(rtol, atol)`.
        - `rtol`, `atol`: tolerances of the default solver and of the accepted residual
          (see above); default $\sqrt{\varepsilon}$ of the model's dtype. The solver
          converges quadratically: the residual reached is usually far below them.
        - `max_steps`: the solver's step budget.
        - `throw`: on a failed solve, raise (`True`: the `RecoveredRESULTS.not_on_fibre`
          message as an `equinox.EquinoxRuntimeError`, inside or outside `jit`) or return
          an operator whose output is NaN (`False`; `recover_with_result` gives the code). Inside a flow, keep `True`: with NaN, diffrax rejects every step
          until `max_steps` and only then reports the failure.

        **Raises:** `TypeError` if `model` is not a factorization or `solver` not a
        least-squares solver; `ValueError` for a non-positive tolerance or `max_steps`.
        """
        if not isinstance(model, AbstractFactorization):
            raise TypeError(
                f"`model` must be a models.AbstractFactorization, got {type(model).__name__}."
            )
        h, theta = laws_function(model)
        dtype = jnp.result_type(*jax.tree.leaves(theta))
        rtol = default_rtol(dtype) if rtol is None else check_tolerance(rtol, "rtol", dtype)
        # atol is absolute (the residual's units are z's): any finite value above 0.
        atol = default_rtol(dtype) if atol is None else check_tolerance(atol, "atol", dtype, np.inf)
        max_steps = check_positive_int(max_steps, "max_steps")
        if not isinstance(throw, bool | np.bool_):
            raise TypeError(f"`throw` must be a bool, got {throw!r}.")
        if solver is None:
            solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
        elif not isinstance(solver, optx.AbstractLeastSquaresSolver):
            raise TypeError(
                "`solver` must be an optimistix least-squares solver (e.g. "
                f"optx.LevenbergMarquardt), got {type(solver).__name__}."
            )
        self.model = model
        self.laws = h(theta)
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.max_steps = int(max_steps)
        self.throw = bool(throw)

    def with_warm_start(self, model: AbstractFactorization) -> "RecoveredMetric":
        r"""The same metric (same $c$ and options), warm-started from `model` (e.g. the
        output of `recover`). **Raises:** `ValueError` for another structure or shapes."""
        old = jax.tree.structure(self.model), [jnp.shape(x) for x in jax.tree.leaves(self.model)]
        new = jax.tree.structure(model), [jnp.shape(x) for x in jax.tree.leaves(model)]
        if old != new:
            raise ValueError(
                f"`model` must have the structure and shapes of the stored model, got "
                f"{type(model).__name__} with shapes {new[1]}; expected {old[1]}."
            )
        return eqx.tree_at(lambda m: m.model, self, model)

    def recover(
        self, z: PyTree[Array], *, warm_start: AbstractFactorization | None = None
    ) -> tuple[AbstractFactorization, Array]:
        r"""Solve $\varphi(\theta) = z$, $h(\theta) = c$ near the warm start.

        **Arguments:** `z`, shaped like `model.lift()`; `warm_start`, a model to start
        from instead of the stored one.

        **Returns:** `(model, residual)`: the model at $\theta^\star$ and the residual norm
        $\|(\varphi(\theta^\star) - z, h(\theta^\star) - c)\|_2$. With `throw=False` a failed
        solve is returned as is (its residual says so).

        **Raises:** as `__call__`.
        """
        model, residual, _ = self.recover_with_result(z, warm_start=warm_start)
        return model, residual

    def recover_with_result(
        self, z: PyTree[Array], *, warm_start: AbstractFactorization | None = None
    ) -> tuple[AbstractFactorization, Array, RecoveredRESULTS]:
        r"""As `recover`, with the result code (`RecoveredRESULTS.successful` or
        `not_on_fibre`) as a third output; with `throw=False` it never raises at run time."""
        metric = self if warm_start is None else self.with_warm_start(warm_start)
        theta, residual, result = metric._recover(z)
        return eqx.combine(theta, _skeleton(metric.model)), residual, result

    def __call__(self, z: PyTree[Array]) -> lx.FunctionLinearOperator:
        theta, _, result = self._recover(z)
        # Only reached on failure when throw=False: NaN, never a wrong θ (the code is
        # `recover_with_result`'s).
        ok = result == RecoveredRESULTS.successful
        theta = jax.tree.map(lambda x: jnp.where(ok, x, jnp.nan), theta)
        return induced_metric(eqx.combine(theta, _skeleton(self.model)))

    def _recover(self, z):
        expected = jax.eval_shape(self.model.lift)
        got = jax.eval_shape(lambda: z)
        if jax.tree.structure(expected) != jax.tree.structure(got) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got))
        ):
            raise ValueError(f"`z` must be shaped like model.lift(), {expected}; got {got}.")
        for x in jax.tree.leaves(z):
            if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
                raise ValueError(f"`z` must be finite, got non-finite entries: {x}.")
        z = jax.tree.map(lambda x, e: jnp.asarray(x, e.dtype), z, expected)
        theta, residual, tolerance, _ = _solve(self, z)
        ok = jnp.isfinite(residual) & (residual <= tolerance)
        # Accepted on the residual (the solver's own stopping test may stop early on a
        # stalled step or late at its budget): one code, raised by error_if, jit or not.
        result = RecoveredRESULTS.where(
            ok, RecoveredRESULTS.successful, RecoveredRESULTS.not_on_fibre
        )
        if self.throw:
            theta = result.error_if(theta, ~ok)
        return theta, residual, result


def _skeleton(model):
    return eqx.partition(model, eqx.is_inexact_array)[1]


@eqx.filter_jit
def _solve(metric: RecoveredMetric, z):
    phi, theta0 = lifting_function(metric.model)
    h, _ = laws_function(metric.model)

    def residual_fn(theta, args):  # zero exactly on the fiber of z in the level set c
        target, c = args
        sub = lambda a, b: jax.tree.map(jnp.subtract, a, b)
        return sub(phi(theta), target), sub(h(theta), c)

    sol = optx.least_squares(
        residual_fn,
        metric.solver,
        theta0,
        args=(z, metric.laws),
        max_steps=metric.max_steps,
        throw=False,
        # The normal equations are singular along the fiber: the pseudo-inverse picks the
        # minimum-norm tangent, a valid derivative of θ*(z).
        adjoint=optx.ImplicitAdjoint(linear_solver=lx.AutoLinearSolver(well_posed=False)),
    )
    residual = _norm(residual_fn(sol.value, (z, metric.laws)))
    tolerance = metric.atol + metric.rtol * (_norm(z) + _norm(metric.laws))
    return sol.value, residual, tolerance, sol.result


class FiberConsistency(eqx.Module):
    r"""What [`manifolds.fiber_consistency`][] returns: `holds` (`residual <= tolerance`);
    `residual`, the largest $\max|M(\theta) - M(\theta')| / \max|M|$ over compared pairs;
    `separation`, the largest $\|\theta - \theta'\| / \|\theta_0\|$ among them; `tolerance`;
    `min_separation`; `num_pairs`; `num_failed` (discarded non-converged solves);
    `solutions`, the accepted solutions as one model with stacked leaves, $\theta_0$ first.
    """

    holds: bool
    residual: float
    separation: float
    tolerance: float
    min_separation: float
    num_pairs: int
    num_failed: int
    solutions: AbstractFactorization


def fiber_consistency(
    model: AbstractFactorization,
    *,
    key: jax.Array,
    num_samples: int = 8,
    perturbation: float = 0.5,
    min_separation: float = 1e-2,
    rtol: float | None = None,
    solver: optx.AbstractLeastSquaresSolver | None = None,
    max_steps: int = 256,
) -> FiberConsistency:
    r"""Test whether $M$ is constant on the fiber $\{\varphi(\theta) = z_0,\ h(\theta) = c\}$.

    The intrinsic metric property says $M(\theta) = K(\varphi(\theta))$ on the level set, so
    $M$ must take one value on each fiber. This solves for $\theta$ on the fiber of
    $z_0 = \varphi(\theta_0)$ from `num_samples` random warm starts
    $\theta_0 + \xi$, $\|\xi\| \approx$ `perturbation`$\,\|\theta_0\|$, and compares $M$ between
    every two accepted solutions (with $\theta_0$ itself) at least `min_separation` apart
    (relative to $\|\theta_0\|$): identical solutions would prove nothing. It is
    [`manifolds.RecoveredMetric`][]'s self-test, and a necessary condition only.

    **Arguments:** `model` ($\theta_0$); `key`, a PRNG key; `num_samples`; `perturbation`;
    `min_separation`; `rtol`, the accepted relative difference of $M$ (default
    $\sqrt{\varepsilon}$); `solver`, `max_steps` as for `RecoveredMetric`.

    **Returns:** a [`manifolds.FiberConsistency`][].

    **Raises:** `ValueError` for bad options, or when no two solutions are
    `min_separation` apart: the fiber may be locally a point (then $\theta$ is recoverable
    and the property holds near $\theta_0$ anyway; THEORY §2), or `perturbation` is too
    small.
    """
    if int(num_samples) < 1:
        raise ValueError(f"`num_samples` must be a positive integer, got {num_samples}.")
    for name, x in (("perturbation", perturbation), ("min_separation", min_separation)):
        if not float(x) > 0:
            raise ValueError(f"`{name}` must be positive, got {x}.")
    metric = RecoveredMetric(model, solver=solver, max_steps=max_steps, throw=False)
    thetas, mats, ok = _sample_fiber(metric, key, int(num_samples), float(perturbation))
    thetas, mats, ok = np.asarray(thetas), np.asarray(mats), np.asarray(ok)
    dtype = jnp.result_type(*jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    tolerance = default_rtol(dtype) if rtol is None else float(rtol)
    thetas, mats = thetas[ok], mats[ok]
    sep = np.linalg.norm(thetas[:, None] - thetas[None], axis=-1) / np.linalg.norm(thetas[0])
    scale = np.max(np.abs(mats), axis=(1, 2))
    diff = np.max(np.abs(mats[:, None] - mats[None]), axis=(2, 3))
    diff = diff / np.maximum(np.maximum(scale[:, None], scale[None]), np.finfo(dtype).tiny)
    used = np.triu(sep >= min_separation, k=1)
    if not used.any():
        raise ValueError(
            f"fiber_consistency found no two solutions at least min_separation="
            f"{min_separation:g} apart (largest relative separation {np.max(sep):.2e}, "
            f"{int(ok.sum())} of {num_samples + 1} solves accepted): the check would be "
            "vacuous. The fiber may be locally a point (theta recoverable, so the metric is "
            "intrinsic near theta_0), or `perturbation` is too small."
        )
    residual = float(np.max(diff[used]))
    _, unravel = jax.flatten_util.ravel_pytree(eqx.filter(model, eqx.is_inexact_array))
    solutions = eqx.combine(jax.vmap(unravel)(jnp.asarray(thetas)), _skeleton(model))
    return FiberConsistency(
        holds=residual <= tolerance,
        residual=residual,
        separation=float(np.max(sep[used])),
        tolerance=tolerance,
        min_separation=float(min_separation),
        num_pairs=int(used.sum()),
        num_failed=int((~ok).sum()),
        solutions=solutions,
    )


@eqx.filter_jit
def _sample_fiber(metric: RecoveredMetric, key, num_samples: int, perturbation: float):
    theta0, skeleton = eqx.partition(metric.model, eqx.is_inexact_array)
    flat0, unravel = jax.flatten_util.ravel_pytree(theta0)
    noise = jax.random.normal(key, (num_samples, flat0.shape[0]), flat0.dtype)
    starts = flat0[None] + perturbation * _norm(flat0) / np.sqrt(flat0.shape[0]) * noise
    z = metric.model.lift()

    def solve(start):
        warm = eqx.combine(unravel(start), skeleton)
        theta, residual, tolerance, _ = _solve(eqx.tree_at(lambda m: m.model, metric, warm), z)
        return jax.flatten_util.ravel_pytree(theta)[0], residual <= tolerance

    flats, ok = jax.vmap(solve)(starts)
    flats = jnp.concatenate([flat0[None], flats])
    ok = jnp.concatenate([jnp.array([True]), ok])  # residual NaN compares False
    mats = jax.vmap(lambda t: induced_metric(eqx.combine(unravel(t), skeleton)).as_matrix())(flats)
    return flats, mats, ok
