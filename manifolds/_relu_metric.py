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
    balance,
    gauss_newton,
    gf2_solve,
    gram_diagonal,
    network_at,
    ravel,
    setup,
)

# Largest D for which BᵀB + AᵀA is formed and Cholesky-factored once (8·D² bytes); above,
# the least-squares step is a preconditioned conjugate-gradient solve at every call.
DENSE_LIMIT = 4096
# Largest (#paths + #hidden)·D for the default Gauss–Newton refinement (dense Jacobian).
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
       is $h(\theta) - h_0$: damped Newton ($\#\text{hidden}\times\#\text{hidden}$ Hessian
       $2A\,\mathrm{diag}(e^{2x})A^\top$, steps capped at one unit of $\log|\theta|$,
       Armijo backtracking), which converges from $\mu = 0$ for every $z$ without zero
       entries; derivatives through the implicit function theorem;
    3. $\theta = \sigma\odot e^{x}$ ($\sigma$ the stored signs, see below), then `refine_steps`
       Gauss–Newton steps on $(\Phi(\theta) - z, h(\theta) - h_0)$ in absolute terms. Where
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

    **Failures** (`throw=True`: `RuntimeError` outside `jit`, `equinox.EquinoxRuntimeError`
    inside; `throw=False`: NaN): a zero or non-finite entry of $z$ (off the dense set),
    Newton not converged within `max_steps`, or signs of $z$ that one crossing does not
    explain. A $z$ off the image of $\Phi$ (a Runge–Kutta stage, integration error) is
    projected in the least-squares sense, without complaint.
    """

    network: AbstractReLUNetwork
    laws: Float[Array, " hidden"]
    signs: Float[Array, " D"]
    path_signs: Float[Array, " paths"]
    law_matrix: Float[Array, "hidden D"]
    gram_factor: Float[Array, "D D"] | None
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
        - `max_steps`: the most Newton steps (typically 5–20 are taken).
        - `refine_steps`: Gauss–Newton steps after the log-domain recovery; default 2
          when the dense Jacobian of $(\Phi, h)$ has at most $2^{22}$ entries, else 0.
        - `throw`: raise on failure (`True`) or return NaN (`False`). Inside a flow, keep
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
            refine_steps = 2 if (network.num_paths + network.num_hidden) * d <= REFINE_LIMIT else 0
        if isinstance(refine_steps, bool) or int(refine_steps) < 0:
            raise ValueError(f"`refine_steps` must be an integer >= 0, got {refine_steps!r}.")
        laws, signs, path_signs, law_matrix, factor = setup(network, d <= dense_limit)
        if factor is not None and not bool(jnp.all(jnp.isfinite(factor))):
            raise ValueError(
                "BᵀB + AᵀA is not positive definite: the rescalings of hidden neurons do not "
                "span ker B for this graph (rank ∂Φ ≠ D − #hidden)."
            )
        self.network = network
        self.laws = laws
        self.signs = signs
        self.path_signs = path_signs
        self.law_matrix = law_matrix
        self.gram_factor = factor
        self.max_steps = int(max_steps)
        self.refine_steps = int(refine_steps)
        self.throw = bool(throw)

    @eqx.filter_jit
    def _log_magnitudes(self, z_flat):
        # Compiled once per network structure, also when called outside `jit`.
        incidence = Incidence(self.network)
        rhs = incidence.transpose(jnp.log(jnp.abs(z_flat)))
        if self.gram_factor is not None:
            x_star = jax.scipy.linalg.cho_solve((self.gram_factor, True), rhs)
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
        mu = balance(x_star, self.laws, self.law_matrix, self.max_steps, 1e3 * eps)
        x = x_star + self.law_matrix.T @ mu
        w = jnp.exp(2 * x)
        residual = jnp.abs(self.law_matrix @ w - self.laws)
        ok = jnp.all(jnp.isfinite(x)) & jnp.all(
            residual <= 1e4 * eps * (jnp.abs(self.law_matrix) @ w + jnp.abs(self.laws))
        )
        return x, ok

    @eqx.filter_jit
    def _theta(self, z_flat):
        # θ(z): log-domain recovery, Gauss–Newton refinement, and the checks. Compiled once
        # per network structure, also when called outside `jit`.
        x, ok = self._log_magnitudes(z_flat)
        signs, explained = self._continued_signs(z_flat, x)
        theta = signs * jnp.exp(x)
        for _ in range(self.refine_steps):
            theta = gauss_newton(self.network, theta, z_flat, self.laws)
        return theta, ok & explained & jnp.all(jnp.isfinite(theta))

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
        theta, ok = self._theta(z_flat)
        return guard(
            theta,
            ok,
            "ReLUPathMetric: no theta with Phi(theta) = z, h(theta) = h0 and the stored "
            "weight signs was found (z has a zero or non-finite entry, Newton did not "
            "converge, or the signs of z differ from those of the stored weight signs by "
            "more than one weight crossing zero).",
            self.throw,
        )

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


def guard(value: Array, ok, what: str, throw: bool) -> Array:
    """`value` if `ok`; else raise (`throw`: `RuntimeError`, or `eqx.error_if` under `jit`)
    or return NaN."""
    message = (
        f"{what} z must have no zero entry (every parameter nonzero: the dense set where "
        "the theory holds); when a weight has crossed zero, update the signs with "
        "`with_signs_from`. Pass throw=False to get NaN instead."
    )
    if not throw:
        return jnp.where(ok, value, jnp.nan)
    if isinstance(ok, jax.core.Tracer):
        return eqx.error_if(value, ~ok, message)
    if not bool(ok):
        raise RuntimeError(message)
    return value


def _as_signs(tree) -> np.ndarray:
    flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])
    if flat.dtype == bool:
        return np.where(flat, 1.0, -1.0)
    return np.sign(flat.astype(float))
