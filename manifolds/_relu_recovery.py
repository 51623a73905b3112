r"""Recovery of a ReLU network's parameters from its path-lifting $z$ and laws $h_0$:
the pieces of [`manifolds.ReLUPathMetric`][] (the path–edge incidence, the convex balance
solve for the rescaling, a Gauss–Newton refinement, the sign bookkeeping over GF(2))."""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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


@ft.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def balance(x_star, laws, law_matrix, max_steps, tol):
    r"""$\mu$ minimising the convex $F(\mu) = \tfrac12\sum_e e^{2(x^\star + A^\top\mu)_e} - h_0\cdot\mu$."""
    dtype = x_star.dtype
    scale_tol = jnp.asarray(tol, dtype)
    abs_a = jnp.abs(law_matrix)

    def objective(mu):
        return 0.5 * jnp.sum(jnp.exp(2 * (x_star + law_matrix.T @ mu))) - laws @ mu

    def cond(state):
        _, step, done = state
        return (step < max_steps) & ~done

    def body(state):
        mu, step, _ = state
        w = jnp.exp(2 * (x_star + law_matrix.T @ mu))
        grad = law_matrix @ w - laws
        done = jnp.all(jnp.abs(grad) <= scale_tol * (abs_a @ w + jnp.abs(laws)))
        hess = 2 * (law_matrix * w[None, :]) @ law_matrix.T
        direction = -jnp.linalg.solve(hess, grad)
        slope = grad @ direction  # −(Newton decrement)², ≤ 0
        # At most one unit of log-magnitude per step (exp cannot overflow), then Armijo
        # backtracking; in the quadratic regime the full step is taken (the decrease would
        # be below the rounding of F).
        cap = jnp.minimum(
            1.0, 1.0 / jnp.maximum(jnp.max(jnp.abs(law_matrix.T @ direction)), 1e-300)
        )
        f0 = objective(mu)
        tiny = -slope <= 1e3 * jnp.finfo(dtype).eps * jnp.sum(w)

        def ls_cond(t):
            bad = ~(objective(mu + t * direction) <= f0 + 1e-4 * t * slope)
            return bad & ~tiny & (t > 1e-12)

        t = jax.lax.while_loop(ls_cond, lambda t: t / 2, cap)
        mu = jnp.where(done, mu, mu + t * direction)
        return mu, step + 1, done

    mu0 = jnp.zeros(laws.shape, dtype)
    mu, _, done = jax.lax.while_loop(cond, body, (mu0, 0, jnp.asarray(False)))
    # One more full Newton step: the stopping test is loose enough to be reached despite
    # rounding, and this step brings the laws to rounding level (quadratic convergence).
    w = jnp.exp(2 * (x_star + law_matrix.T @ mu))
    hess = 2 * (law_matrix * w[None, :]) @ law_matrix.T
    polished = mu - jnp.linalg.solve(hess, law_matrix @ w - laws)
    return jnp.where(done, polished, mu)


@balance.defjvp
def _balance_jvp(max_steps, tol, primals, tangents):
    # Implicit function theorem on ∇F = A w − h₀ = 0, w = exp(2(x* + Aᵀμ)); the law matrix
    # and the options are structural constants (their tangents are ignored).
    x_star, laws, law_matrix = primals
    dx, dlaws = tangents[0], tangents[1]
    mu = balance(x_star, laws, law_matrix, max_steps, tol)
    w = jnp.exp(2 * (x_star + law_matrix.T @ mu))
    hess = 2 * (law_matrix * w[None, :]) @ law_matrix.T
    dmu = jnp.linalg.solve(hess, dlaws - 2 * law_matrix @ (w * dx))
    return mu, dmu


def gauss_newton(network, theta, z_flat, laws):
    # One step on r(θ) = (Φ(θ) − z, h(θ) − h₀) with the dense (#paths + #hidden) × D
    # Jacobian. A tiny Tikhonov term keeps the step finite where a weight is near zero
    # (there the fibre is ill-determined and r's Jacobian nearly rank-deficient).
    def residual(t):
        net = network_at(network, t)
        return jnp.concatenate([ravel(net.lift()) - z_flat, net.conservation_laws() - laws])

    r = residual(theta)
    jac = jax.jacfwd(residual)(theta)
    normal = jac.T @ jac
    reg = 1e-13 * jnp.trace(normal) / theta.size
    eye = jnp.eye(theta.size, dtype=theta.dtype)
    return theta - jnp.linalg.solve(normal + reg * eye, jac.T @ r)


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
    factor = None
    if dense:
        incidence = Incidence(network)
        eye = jnp.eye(d, dtype=theta.dtype)
        gram = jax.lax.map(lambda e: incidence.transpose(incidence(e)), eye, batch_size=min(d, 64))
        factor = jnp.linalg.cholesky(gram + law_matrix.T @ law_matrix)
    return network.conservation_laws(), signs, path_signs, law_matrix, factor


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
