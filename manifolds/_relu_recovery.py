r"""Recovery of a ReLU network's parameters from its path-lifting $z$ and laws $h_0$:
the pieces of [`manifolds.ReLUPathMetric`][] (the path–edge incidence, the convex balance
solve for the rescaling, a Levenberg–Marquardt refinement (both Optimistix), the result codes, the sign bookkeeping over GF(2))."""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from models import AbstractReLUNetwork


def ravel(tree) -> Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


class Incidence(eqx.Module):
    # x ↦ Bx on flat parameter vectors, through the network's additive path-lifting.
    network: AbstractReLUNetwork

    def __call__(self, x: Array) -> Array:
        _, unravel = ravel_pytree(eqx.filter(self.network, eqx.is_inexact_array))
        return ravel(self.network.log_lift(unravel(x)))

    def transpose(self, y: Array) -> Array:
        d = ravel_pytree(eqx.filter(self.network, eqx.is_inexact_array))[0]
        return jax.linear_transpose(self, d)(y)[0]


class ReLURESULTS(optx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """The outcomes of a ReLU recovery: optimistix's, and the ReLU metrics' own."""

    off_dense_set = (
        "ReLU metric: z has a zero or non-finite entry. z must have no zero entry (every "
        "parameter nonzero: the dense set where the theory holds); when a weight has "
        "crossed zero, update the signs with `with_signs_from`. Pass throw=False to get "
        "the result code (and a NaN metric) instead."
    )
    signs_unexplained = (
        "ReLUPathMetric: no theta with Phi(theta) = z, h(theta) = h0 and the stored weight "
        "signs: the signs of z differ from those of the stored weight signs by more than "
        "one weight crossing zero (path z_p changing sign through zero); update the signs "
        "with `with_signs_from` at each crossing."
    )
    laws_not_reached = (
        "ReLUPathMetric: the balance solve (Levenberg-Marquardt on h(theta) = h0) stopped "
        "before the laws were at rounding level: raise `max_steps`."
    )


def _law_residual(mu, args):
    # ∇F(μ) = A w − h₀ = h(θ) − h₀ with w = exp(2(x* + Aᵀμ)): zero at the balanced θ.
    x_star, laws, law_matrix = args
    return law_matrix @ jnp.exp(2 * (x_star + law_matrix.T @ mu)) - laws


def balance(x_star, laws, law_matrix, max_steps: int, tol: float):
    r"""$\mu$ minimising the convex $F(\mu) = \tfrac12\sum_e e^{2(x^\star + A^\top\mu)_e}
    - h_0\cdot\mu$, as the zero of $\nabla F$, returned with an `optx.RESULTS`.

    Levenberg–Marquardt on $\nabla F$: its Jacobian is the Hessian $2A\,\mathrm{diag}(w)
    A^\top$ (positive definite), so the Gauss–Newton step is Newton's, and the trust
    region globalises it (a trial step whose exponentials overflow is rejected and the
    region shrunk); $\|\nabla F\|^2$ has no stationary point but the minimiser.
    Derivatives with respect to $(x^\star, h_0)$ come from the implicit function theorem
    (`optx.ImplicitAdjoint`).
    """
    sol = optx.least_squares(
        _law_residual,
        optx.LevenbergMarquardt(rtol=tol, atol=tol),
        jnp.zeros(laws.shape, x_star.dtype),
        args=(x_star, laws, law_matrix),
        max_steps=max_steps,
        throw=False,
    )
    return sol.value, ReLURESULTS.promote(sol.result)


def _fibre_residual(network, theta, args):
    z_flat, laws = args
    net = network_at(network, theta)
    return jnp.concatenate([ravel(net.lift()) - z_flat, net.conservation_laws() - laws])


def refine(network, theta, z_flat, laws, max_steps: int, tol: float):
    r"""Levenberg–Marquardt on $r(\theta) = (\Phi(\theta) - z, h(\theta) - h_0)$ from
    `theta`, with its `optx.RESULTS`. The damping keeps the step finite where a weight is
    near zero (there the fibre is ill-determined and $\partial r$ nearly rank-deficient);
    derivatives with respect to $z$ by the implicit function theorem."""
    sol = optx.least_squares(
        ft.partial(_fibre_residual, network),
        optx.LevenbergMarquardt(rtol=tol, atol=tol),
        theta,
        args=(z_flat, laws),
        max_steps=max_steps,
        throw=False,
    )
    return sol.value, ReLURESULTS.promote(sol.result)


def network_at(network: AbstractReLUNetwork, theta_flat: Array) -> AbstractReLUNetwork:
    """`network` with its parameters replaced by the flat vector `theta_flat`."""
    params, skeleton = eqx.partition(network, eqx.is_inexact_array)
    return eqx.combine(ravel_pytree(params)[1](theta_flat), skeleton)


@eqx.filter_jit
def setup(network, dense: bool):
    # Everything the metric precomputes from θ₀, in one compiled call.
    theta = ravel_pytree(eqx.filter(network, eqx.is_inexact_array))[0]
    d = theta.size
    # h(θ) = A θ²: A is half the laws' Jacobian at θ = 1.
    laws_at = lambda t: ravel(network_at(network, t).conservation_laws())
    law_matrix = 0.5 * jax.jacfwd(laws_at)(jnp.ones_like(theta))
    signs = jnp.sign(theta)
    path_signs = jnp.sign(ravel(network_at(network, signs).lift()))
    operator = state = None
    if dense:
        incidence = Incidence(network)
        eye = jnp.eye(d, dtype=theta.dtype)
        gram = jax.lax.map(lambda e: incidence.transpose(incidence(e)), eye, batch_size=min(d, 64))
        operator = lx.MatrixLinearOperator(
            gram + law_matrix.T @ law_matrix, lx.positive_semidefinite_tag
        )
        state = lx.Cholesky().init(operator, {})  # factored once, reused by every solve
    return network.conservation_laws(), signs, path_signs, law_matrix, operator, state


def gram_diagonal(incidence, law_matrix, like):
    # diag(BᵀB) = number of paths through each parameter; diag(AᵀA) = column norms of A.
    counts = incidence.transpose(jnp.ones_like(incidence(jnp.zeros_like(like))))
    return counts + jnp.sum(law_matrix**2, axis=0)


def gf2_solve(matrix: np.ndarray, rhs: np.ndarray, order: np.ndarray) -> np.ndarray | None:
    # A solution t ∈ {0,1}^D of matrix·t = rhs over GF(2), supported on the pivot columns
    # of an elimination that takes the columns in `order` (smallest weights first).
    a = matrix[:, order].copy()
    b = rhs.copy()
    pivots = []
    row = 0
    for col in range(a.shape[1]):
        if row == a.shape[0]:
            break
        candidates = np.flatnonzero(a[row:, col]) + row
        if candidates.size == 0:
            continue
        p = candidates[0]
        a[[row, p]] = a[[p, row]]
        b[[row, p]] = b[[p, row]]
        hit = np.flatnonzero(a[:, col])
        hit = hit[hit != row]
        a[hit] ^= a[row]
        b[hit] ^= b[row]
        pivots.append(col)
        row += 1
    if b[row:].any():
        return None
    t = np.zeros(a.shape[1], dtype=bool)
    t[pivots] = b[: len(pivots)]
    out = np.zeros_like(t)
    out[order] = t
    return out
