r"""The intrinsic metric of ReLU networks through the path-lifting, for any DAG."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, PyTree

from models import AbstractReLUNetwork

from ._intrinsic_metric import AbstractIntrinsicMetric
from ._relu_recovery import (
    Incidence,
    ReLURESULTS as RESULTS,
    balance,
    gf2_solve,
    gram_diagonal,
    network_at,
    ravel,
    refine,
    setup,
)

# Largest D for which BᵀB + AᵀA is formed and Cholesky-factored once (8·D² bytes); above,
# the least-squares step is a preconditioned conjugate-gradient solve at every call.
DENSE_LIMIT = 4096
# Largest (#paths + #hidden)·D for the default Levenberg–Marquardt refinement (dense Jacobian).
REFINE_LIMIT = 2**22


class AbstractReLUMetric(AbstractIntrinsicMetric):
    r"""An intrinsic metric of a ReLU network ([`models.AbstractReLUNetwork`][]).

    Besides $K(z)$, it knows the network's structure (`network`, the network at
    $\theta_0$) and recovers, from $z$, the network $\theta(z)$ on the fibre
    $\{\Phi(\theta) = z,\ h(\theta) = h(\theta_0)\}$ with the current weight signs
    (`recover`): its activation pattern is what the intrinsic flow of a loss on the
    network's outputs needs (`network.predict_from_lift(z, pattern, x)`).

    **Signs.** $(z, h)$ determine $|\theta|$ only: flipping the signs of all incoming and
    outgoing weights (and bias) of a hidden neuron changes neither, but changes the
    network. The weight signs are part of the data: `signs` ($\pm1$, flattened in the
    order of `jax.flatten_util.ravel_pytree(eqx.filter(network, eqx.is_inexact_array))`),
    those of $\theta_0$ at first, and `path_signs` the signs they give each path (flattened
    like `z`). $K(z)$ does not depend on them; `recover` does. A weight can cross zero
    along a flow (generic inits do so on ordinary regression tasks); the paths through
    it then change sign, which no function of $z$ alone can attribute (it could be that
    weight or, modulo a neuron flip, all the others at its neuron). Track it as an event:
    the entries of `path_signs * z` are switching functions, and at a crossing
    `with_signs_from(z, new_path_signs)` returns the metric with updated signs.
    """

    network: eqx.AbstractVar[AbstractReLUNetwork]
    signs: eqx.AbstractVar[Float[Array, " D"]]
    path_signs: eqx.AbstractVar[Float[Array, " paths"]]

    def consistent(self, z: PyTree[Float[Array, "..."]]) -> Bool[Array, ""]:
        r"""Whether every $z_p$ has the sign `path_signs[p]` that the stored weight signs
        give its path (then `recover(z)` is on the fibre over `z`).

        `path_signs * z` (flattened) is positive exactly on this region: its entries are
        switching functions for the crossings of weights through zero.
        """
        return jnp.all(ravel(z) * self.path_signs > 0)

    @abc.abstractmethod
    def recover(self, z: PyTree[Float[Array, "..."]]) -> AbstractReLUNetwork:
        r"""The network $\theta$ with $\Phi(\theta) = z$, $h(\theta) = h(\theta_0)$ and the
        stored weight signs. Jittable, and differentiable with respect to `z`."""

    @abc.abstractmethod
    def recover_with_result(
        self, z: PyTree[Float[Array, "..."]]
    ) -> tuple[AbstractReLUNetwork, RESULTS]:
        r"""`recover(z)` that never raises: the network and a `RESULTS` code
        (`RESULTS.successful`, or why the recovery failed; on failure the network is NaN).
        `result.error_if(...)` or `optx`-style `is_successful` checks are jit-safe."""

    @abc.abstractmethod
    def with_signs_from(
        self, z: PyTree[Float[Array, "..."]], path_signs: PyTree[Array] | None = None
    ) -> "AbstractReLUMetric":
        r"""The same metric with weight signs that explain the signs of `z` (or
        `path_signs`, shaped like `z`: $\pm1$ or booleans "positive"), changing as few and
        as small weights as possible. Host-side (not jittable): call it between solves,
        e.g. when some $z_p$ has crossed zero."""


def check_network(network) -> None:
    """Tier-(a) checks shared by the ReLU metrics: a concrete network on the dense set."""
    if not isinstance(network, AbstractReLUNetwork):
        raise TypeError(
            f"`network` must be a models.AbstractReLUNetwork, got {type(network).__name__}."
        )
    params = eqx.filter(network, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if any(isinstance(x, jax.core.Tracer) for _, x in leaves):
        raise TypeError("`network` is traced: build the metric outside `jit`.")
    zeros = [
        (jax.tree_util.keystr(path), np.argwhere(np.asarray(x) == 0))
        for path, x in leaves
        if np.any(np.asarray(x) == 0)
    ]
    if zeros:
        count = sum(len(idx) for _, idx in zeros)
        name, idx = zeros[0]
        raise ValueError(
            f"`network` has {count} parameter(s) exactly zero (first: {name}"
            f"[{', '.join(str(int(i)) for i in idx[0])}]): theta is outside the dense set "
            "where every parameter is nonzero, on which the path-lifting has rank "
            "D - #hidden and theta is recoverable from (z, h). Perturb the zero "
            "parameters (their sign is part of the data) or remove the edges."
        )


class ReLUPathMetric(AbstractReLUMetric):
    r"""The intrinsic metric of any ReLU network through its path-lifting (THEORY §3).

    $$K(z) = M(\theta(z)) = \tfrac12\,\mathrm{diag}(z)\,B\,\mathrm{diag}(q)^{-1}B^\top
    \mathrm{diag}(z), \qquad q_e = \theta_e^2/2,$$

    with $\theta(z)$ the point of the fibre $\{\Phi(\theta) = z,\ h(\theta) = h_0\}$ with the
    stored weight signs ($h_0 = h(\theta_0)$, $B$ the path–parameter incidence matrix).
    $K(z)v$ is applied matrix-free, as one jvp and one vjp of the path-lifting at
    $\theta(z)$ (no division by $\theta_e$, so it stays accurate where a weight is near
    zero); nothing of size $\#\text{paths}^2$ is formed.

    **Recovering $\theta(z)$**, with $x = \log|\theta|$, $Bx = \log|z|$ and laws
    $h(\theta) = A\,e^{2x}$ ($A \in \{0,\pm1\}^{\#\text{hidden}\times D}$: $+1$ on a neuron's
    incoming weights and bias, $-1$ on its outgoing weights). The rescalings of hidden
    neurons span $\ker B = \mathrm{range}\,A^\top$, so:

    1. $x^\star$ solves $(B^\top B + A^\top A)\,x^\star = B^\top\log|z|$: the least-squares
       solution of $Bx = \log|z|$ with $Ax^\star = 0$ (the matrix is positive definite; it
       is formed and Cholesky-factored once when $D \le$ `dense_limit`, otherwise the
       solve is a Jacobi-preconditioned conjugate gradient at each call; $B$ and
       $B^\top$ are the network's `log_lift` and its transpose);
    2. $x = x^\star + A^\top\mu$ with $\mu$ the minimiser of the strictly convex, coercive
       $F(\mu) = \tfrac12\sum_e e^{2(x^\star + A^\top\mu)_e} - h_0\cdot\mu$, whose gradient
       is $h(\theta) - h_0$: `optx.LevenbergMarquardt` on $\nabla F = 0$ (a trust-region
       Newton method: the Jacobian of $\nabla F$ is the Hessian
       $2A\,\mathrm{diag}(e^{2x})A^\top$), from $\mu = 0$; derivatives through the
       implicit function theorem (`optx.ImplicitAdjoint`);
    3. $\theta = \sigma\odot e^{x}$ ($\sigma$ the stored signs, see below), then a
       Levenberg–Marquardt solve (at most `refine_steps` steps) on $(\Phi(\theta) - z, h(\theta) - h_0)$ in absolute terms. Where
       $z$ is exactly on the image they change nothing; near a weight crossing zero, where
       the tiny $z_p$ through it carry large relative errors that the logarithms amplify,
       they restore an accurate $\theta$ (and the crossing weight's sign).

    This is the "small Newton solve in $\log q$" of the issue, split in a linear and a
    convex step (plus the refinement).

    **Signs across a crossing.** When the paths whose $z_p$ does not have its stored sign
    are exactly the paths through one weight (several: the smallest), that weight is
    taken to have crossed zero and its sign is flipped. Two crossings or more since the
    signs were stored cannot be attributed (`with_signs_from`, at each crossing, keeps
    them current).

    **Failures** are result codes (`manifolds.ReLURESULTS`: `off_dense_set`, a zero or
    non-finite entry of $z$; `signs_unexplained`, signs of $z$ that one crossing does not
    explain; `laws_not_reached` or an optimistix code, a solve not converged within its
    budget). `recover_with_result` returns the code; otherwise `throw=True` raises its
    message (`equinox.EquinoxRuntimeError`, a `RuntimeError`, inside or outside `jit`)
    and `throw=False` gives NaN. A $z$ off the image of $\Phi$ (a Runge–Kutta stage, integration error) is
    projected in the least-squares sense, without complaint.
    """

    network: AbstractReLUNetwork
    laws: Float[Array, " hidden"]
    signs: Float[Array, " D"]
    path_signs: Float[Array, " paths"]
    law_matrix: Float[Array, "hidden D"]
    gram: lx.MatrixLinearOperator | None
    gram_state: PyTree | None
    max_steps: int = eqx.field(static=True)
    refine_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        network: AbstractReLUNetwork,
        *,
        max_steps: int = 100,
        refine_steps: int | None = None,
        throw: bool = True,
        dense_limit: int = DENSE_LIMIT,
    ):
        r"""**Arguments:**

        - `network`: the network at $\theta_0$ (fixes $h_0$ and the weight signs).
        - `max_steps`: the step budget of the balance solve (typically 5–20 are taken).
        - `refine_steps`: the step budget of the Levenberg–Marquardt refinement after the
          log-domain recovery (typically 2–3 are taken; 0: no refinement); default 16
          when the dense Jacobian of $(\Phi, h)$ has at most $2^{22}$ entries, else 0.
        - `throw`: raise on failure (`True`) or return NaN (`False`; the code from
          `recover_with_result`). Inside a flow, keep
          `True`: with NaN, diffrax rejects every step until `max_steps`.
        - `dense_limit`: form and factor $B^\top B + A^\top A$ ($D\times D$) once when
          $D \le$ `dense_limit`; above, solve by conjugate gradients at each call.

        **Raises:** `TypeError` for a non-ReLU or traced network; `ValueError` when a
        parameter is exactly zero (outside the dense set where the theory holds).
        """
        check_network(network)
        if isinstance(max_steps, bool) or int(max_steps) < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
        d = ravel_pytree(eqx.filter(network, eqx.is_inexact_array))[0].size
        if refine_steps is None:
            refine_steps = 16 if (network.num_paths + network.num_hidden) * d <= REFINE_LIMIT else 0
        if isinstance(refine_steps, bool) or int(refine_steps) < 0:
            raise ValueError(f"`refine_steps` must be an integer >= 0, got {refine_steps!r}.")
        laws, signs, path_signs, law_matrix, gram, state = setup(network, d <= dense_limit)
        if state is not None:
            message = (
                "BᵀB + AᵀA is not positive definite: the rescalings of hidden neurons do not "
                "span ker B for this graph (rank ∂Φ ≠ D − #hidden)."
            )
            bad = ~jnp.all(jnp.isfinite(state[0]))
            if isinstance(bad, jax.core.Tracer):  # built inside an outer jit: check by value
                state = (eqx.error_if(state[0], bad, message),) + tuple(state[1:])
            elif bool(bad):
                raise ValueError(message)
        self.network = network
        self.laws = laws
        self.signs = signs
        self.path_signs = path_signs
        self.law_matrix = law_matrix
        self.gram = gram
        self.gram_state = state
        self.max_steps = int(max_steps)
        self.refine_steps = int(refine_steps)
        self.throw = bool(throw)

    @eqx.filter_jit
    def _log_magnitudes(self, z_flat):
        # Compiled once per network structure, also when called outside `jit`.
        incidence = Incidence(self.network)
        rhs = incidence.transpose(jnp.log(jnp.abs(z_flat)))
        if self.gram is not None:
            x_star = lx.linear_solve(self.gram, rhs, lx.Cholesky(), state=self.gram_state).value
        else:
            a = self.law_matrix
            op = lx.FunctionLinearOperator(
                lambda x: incidence.transpose(incidence(x)) + a.T @ (a @ x),
                jax.eval_shape(lambda: rhs),
                tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
            )
            diag = gram_diagonal(incidence, a, rhs)
            pre = lx.DiagonalLinearOperator(1 / diag)
            pre = lx.TaggedLinearOperator(pre, lx.positive_semidefinite_tag)
            eps = jnp.finfo(rhs.dtype).eps
            solver = lx.CG(rtol=100 * eps, atol=100 * eps, max_steps=20 * rhs.size)
            x_star = lx.linear_solve(
                op, rhs, solver, options={"preconditioner": pre}, throw=False
            ).value
        eps = float(jnp.finfo(z_flat.dtype).eps)
        mu, result = balance(x_star, self.laws, self.law_matrix, self.max_steps, 1e-10)
        x = x_star + self.law_matrix.T @ mu
        w = jnp.exp(2 * x)
        residual = jnp.abs(self.law_matrix @ w - self.laws)
        # The laws at rounding level (relative to the terms of each law), whatever the
        # solver's own stopping test said.
        ok = jnp.all(jnp.isfinite(x)) & jnp.all(
            residual <= 1e4 * eps * (jnp.abs(self.law_matrix) @ w + jnp.abs(self.laws))
        )
        return x, RESULTS.where(
            ok | (result != RESULTS.successful), result, RESULTS.laws_not_reached
        )

    @eqx.filter_jit
    def _theta(self, z_flat):
        # θ(z): log-domain recovery, refinement, and the result code (the first failure
        # in the order the steps depend on each other). Compiled once per network
        # structure, also when called outside `jit`.
        # Off the dense set (a zero or non-finite z_p) the code says so; the solves run on
        # a finite stand-in, so that no solver meets a non-finite input.
        entry_ok = jnp.isfinite(z_flat) & (z_flat != 0)
        dense = jnp.all(entry_ok)
        z_flat = jnp.where(entry_ok, z_flat, jnp.ones_like(z_flat))
        x, result = self._log_magnitudes(z_flat)
        signs, explained = self._continued_signs(z_flat, x)
        theta = signs * jnp.exp(x)
        if self.refine_steps > 0:
            # A polish from an already consistent θ: its code is not a failure. For z off
            # the image (a Runge–Kutta stage) the least-squares residual is not zero and
            # Levenberg–Marquardt may spend its budget creeping at rounding level; the
            # iterate is then still the projection (a non-finite one is caught below).
            tol = 1e3 * float(jnp.finfo(z_flat.dtype).eps)
            theta, _ = refine(self.network, theta, z_flat, self.laws, self.refine_steps, tol)
        result = RESULTS.where(explained, result, RESULTS.signs_unexplained)
        dense = dense & jnp.all(jnp.isfinite(theta))
        return theta, RESULTS.where(dense, result, RESULTS.off_dense_set)

    def _continued_signs(self, z_flat, x):
        # The stored signs, continued across one crossing: when the paths whose z has not
        # the stored sign are exactly the paths through some weights, the smallest of them
        # has crossed zero (the others would have to be smaller still). Anything else is
        # left to the refinement and the checks.
        incidence = Incidence(self.network)
        wrong = (jnp.sign(z_flat) != self.path_signs).astype(x.dtype)
        total = jnp.sum(wrong)
        through = incidence.transpose(wrong)
        count = incidence.transpose(jnp.ones_like(wrong))
        candidate = (through == total) & (count == total) & (total > 0)
        e = jnp.argmin(jnp.where(candidate, x, jnp.inf))
        flip = jnp.where(jnp.any(candidate) & (jnp.arange(x.size) == e), -1.0, 1.0)
        return self.signs * flip.astype(x.dtype), (total == 0) | jnp.any(candidate)

    def _recovered(self, z_flat):
        theta, result = self._theta(z_flat)
        return guard(theta, result, self.throw)

    def __call__(self, z: PyTree[Float[Array, "..."]]) -> lx.FunctionLinearOperator:
        theta = self._recovered(ravel_pytree(z)[0])
        lift = lambda t: network_at(self.network, t).lift()
        _, jvp_fn = jax.linearize(lift, theta)
        vjp_fn = jax.linear_transpose(jvp_fn, theta)

        def mv(g):
            return jvp_fn(vjp_fn(g)[0])

        return lx.FunctionLinearOperator(
            mv,
            jax.eval_shape(lambda: z),
            tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
        )

    def recover(self, z: PyTree[Float[Array, "..."]]) -> AbstractReLUNetwork:
        return network_at(self.network, self._recovered(ravel_pytree(z)[0]))

    def recover_with_result(
        self, z: PyTree[Float[Array, "..."]]
    ) -> tuple[AbstractReLUNetwork, RESULTS]:
        theta, result = self._theta(ravel_pytree(z)[0])
        return network_at(self.network, guard(theta, result, False)), result

    def with_signs_from(
        self, z: PyTree[Float[Array, "..."]], path_signs: PyTree[Array] | None = None
    ) -> "ReLUPathMetric":
        z_flat = np.asarray(ravel_pytree(z)[0])
        wanted = np.sign(z_flat) if path_signs is None else _as_signs(path_signs)
        if wanted.shape != z_flat.shape or np.any(wanted == 0):
            raise ValueError(
                "`path_signs` must be shaped like z, with nonzero signs (or z without zeros)."
            )
        flip_paths = wanted != np.asarray(self.path_signs)
        if not flip_paths.any():
            return self
        # Magnitudes where z is tiny but nonzero are fine; an exact zero is floored.
        floor = np.finfo(z_flat.dtype).tiny ** 0.5 * max(np.max(np.abs(z_flat)), 1.0)
        safe = np.where(np.abs(z_flat) > floor, np.abs(z_flat), floor)
        x, _ = self._log_magnitudes(jnp.asarray(safe))
        incidence = np.asarray(
            jax.jacfwd(Incidence(self.network))(jnp.zeros(self.signs.shape, z_flat.dtype))
        ).astype(bool)
        flips = gf2_solve(incidence, flip_paths, np.argsort(np.asarray(x)))
        if flips is None:
            raise ValueError(
                "No choice of weight signs produces these path signs: z is not in the image "
                "of the path-lifting."
            )
        signs = jnp.where(jnp.asarray(flips), -self.signs, self.signs)
        return eqx.tree_at(
            lambda m: (m.signs, m.path_signs),
            self,
            (signs, jnp.asarray(wanted, self.path_signs.dtype)),
        )


def guard(value: Array, result: RESULTS, throw: bool) -> Array:
    """`value` if `result` is successful; else raise its message (`throw`, through
    `eqx.error_if`: an `equinox.EquinoxRuntimeError`, inside or outside `jit`) or return
    NaN. One failure channel: the result code."""
    failed = result != RESULTS.successful
    if throw:
        return result.error_if(value, failed)
    return jnp.where(failed, jnp.nan, value)


def _as_signs(tree) -> np.ndarray:
    flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])
    if flat.dtype == bool:
        return np.where(flat, 1.0, -1.0)
    return np.sign(flat.astype(float))
