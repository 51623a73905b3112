r"""Pointwise tests of the intrinsic properties (THEORY §2): kernel inclusion and recoverability.

Both look at $K(\theta) = \ker\partial\varphi(\theta) \cap \ker\partial h(\theta)$, the directions that
change neither $z = \varphi(\theta)$ nor the conservation laws $h(\theta)$ to first order.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from models import AbstractFactorization

from ._lie_algebra import (
    MAX_ENTRIES,
    check_parameters,
    cut,
    flat,
    jacobian_matrix,
    jacobian_rows,
    lie_algebra_basis,
    rank_tolerance,
)


class KernelInclusionTest(eqx.Module):
    r"""The result of [`manifolds.kernel_inclusion_test`][].

    - `holds`: whether $K(\theta) \subseteq \ker\partial M(\theta)$ to `tolerance`.
    - `residual`: $\max_v \|\partial M(\theta)[v]\|_F\,\|\theta\| / \|M(\theta)\|_F$ over unit
      $v \in K(\theta)$ (`0.0` when $K(\theta) = \{0\}$).
    - `kernel_dimension`: $\dim K(\theta)$.
    - `tolerance`: the relative tolerance of the rank decisions and of `holds`.
    """

    holds: bool
    residual: float
    kernel_dimension: int
    tolerance: float


class RecoverabilityTest(eqx.Module):
    r"""The result of [`manifolds.recoverability_test`][].

    - `holds`: whether $K(\theta) = \{0\}$.
    - `kernel_dimension`: $\dim K(\theta)$.
    - `tolerance`: the relative rank tolerance used.
    - `singular_value_gap`: the relative singular-value gap at the rank decision defining
      $K(\theta)$ (at most $1/\varepsilon$; small means a fragile verdict).
    """

    holds: bool
    kernel_dimension: int
    tolerance: float
    singular_value_gap: float


def _top(m: np.ndarray) -> float:
    s = np.linalg.norm(m, 2) if m.size else 0.0
    return float(s) if s > 0 else 1.0


def _laws_jacobian(laws, theta):
    flat_theta, unravel = ravel_pytree(theta)
    try:
        h = jax.jacfwd(lambda t: flat(laws(unravel(t))))(flat_theta)
    except Exception as e:
        raise TypeError(
            "`laws` must map the parameter PyTree θ (as from `manifolds.lifting_function`) "
            f"to a PyTree of floating arrays; calling it failed with: {e}"
        ) from e
    h = np.asarray(h)
    if not np.all(np.isfinite(h)):
        raise ValueError("`laws` has a non-finite Jacobian ∂h(θ) at the model's parameters.")
    return h


def kernel_basis(model, laws, rtol, key) -> tuple[np.ndarray, float, float]:
    r"""An orthonormal basis of $K(\theta)$ ($D\times\kappa$), the tolerance and the gap."""
    if laws is not None and not callable(laws):
        raise TypeError(f"`laws` must be None or a callable θ ↦ h(θ), got {type(laws).__name__}.")
    if laws is None:
        # Complete laws have ker ∂h(θ) = Lie(W)(θ) ⊇ W_θ, so K(θ) = Lie(W)(θ) ∩ ker ∂φ(θ).
        trace, lie, jac = lie_algebra_basis(model, rtol=rtol, key=key)
        if not trace.converged:
            raise RuntimeError(
                "The Lie algebra, which stands for complete conservation laws when `laws` "
                f"is None, is undecided: {trace.reason} Pass `laws` explicitly."
            )
        tol, eps = trace.tolerance, float(np.finfo(lie.dtype).eps)
        # The rows of ∂φ lie in Lie(W)(θ): ∂φ·basis has the singular values of ∂φ.
        _, s, vt = np.linalg.svd(jac @ lie, full_matrices=True)
        rank, gap = cut(s / (s[0] if s.size and s[0] > 0 else 1.0), tol, 1.0, eps)
        return lie @ vt[rank:].T, tol, min(gap, trace.singular_value_gap)
    phi, theta, _, _ = check_parameters(model)
    tol, eps = rank_tolerance(theta, rtol)
    jac = np.asarray(jacobian_matrix(phi, theta))
    h = _laws_jacobian(laws, theta)
    # Each block scaled by its norm, so that the rank decision does not depend on units.
    jac, h = jac / _top(jac), h / _top(h)
    if h.size and np.max(np.abs(h @ jac.T)) > tol:
        raise ValueError(
            "`laws` are not conservation laws of `model`: ∂h(θ)∂φ(θ)ᵀ is not zero (relative "
            f"size {np.max(np.abs(h @ jac.T)):.2e} > rtol={tol:.2e}), so ∇h is not ⊥ W_θ."
        )
    stacked = np.concatenate([jac, h])
    _, s, vt = np.linalg.svd(stacked, full_matrices=True)
    rank, gap = cut(s, tol, 1.0, eps)
    return vt[rank:].T, tol, gap


@eqx.filter_jit
def _metric_derivatives(phi, theta, directions, batch_size: int):
    def metric(t):
        j = jacobian_rows(phi, t)
        return j @ j.T

    def derivative(v):
        return jnp.ravel(jax.jvp(metric, (theta,), (v,))[1])

    derivatives = jax.lax.map(derivative, directions, batch_size=batch_size)
    return jnp.linalg.norm(metric(theta)), derivatives


def kernel_inclusion_test(
    model: AbstractFactorization,
    laws: Callable[[PyTree[Array]], PyTree[Array]] | None = None,
    *,
    rtol: float | None = None,
    key: PRNGKeyArray | None = None,
) -> KernelInclusionTest:
    r"""Test $\ker\partial\varphi(\theta) \cap \ker\partial h(\theta) \subseteq \ker\partial M(\theta)$.

    A necessary condition for the intrinsic metric property (THEORY §2): if
    $M = K(\varphi)$ on the level set $\{h = h(\theta)\}$, then moving along a direction $v$
    that keeps $\varphi$ and $h$ fixed to first order cannot change $M$ to first order.
    With $K(\theta) = \ker\partial\varphi \cap \ker\partial h$ (an orthonormal basis of it from SVDs),

    $$\mathrm{residual} = \max_{v \in K(\theta),\ \|v\| = 1}
    \frac{\|\partial M(\theta)[v]\|_F}{\|M(\theta)\|_F/\|\theta\|}$$

    (the spectral norm of $v \mapsto \partial M(\theta)[v]$ on $K(\theta)$, so basis-independent),
    $\partial M[v]$ being the jvp of $\theta \mapsto M(\theta) = \partial\varphi\,\partial\varphi^\top$ (dense
    $d\times d$). The scale $\|M\|_F/\|\theta\|$ is the size of $\partial M$ along $\theta$ itself for
    homogeneous liftings ($\partial M(\theta)[\theta] = p\,M(\theta)$ for $M$ of degree $p$), so the
    residual is $O(1)$ when the inclusion fails and $O(\varepsilon)$ when it holds.

    **Arguments:**

    - `model`: any [`models.AbstractFactorization`][].
    - `laws`: `None` (default) for a complete set of laws, using
      $\ker\partial h(\theta) = \mathrm{Lie}(W)(\theta)$ from [`manifolds.lie_algebra_trace`][];
      or a callable θ-PyTree ↦ PyTree of law values, e.g.
      `manifolds.laws_function(model)[0]` ($\partial h$ by `jax.jacfwd`: small models; checked
      to be orthogonal to $W_\theta$).
    - `rtol`: relative tolerance of the rank decisions and of `holds`; default
      $\sqrt{\varepsilon}$ of the parameters' dtype.
    - `key`: PRNG key of the random brackets when `laws` is `None`.

    **Returns:** a [`manifolds.KernelInclusionTest`][].

    **Memory:** $\partial M[v]$ is the jvp of the dense $d\times D$ Jacobian, formed for batches
    of basis vectors within $2^{27}$ entries; so $\max(d(D + d), \kappa d^2) \le 2^{27}$
    ($\kappa = \dim K(\theta)$), on top of [`manifolds.lie_algebra_trace`][]'s
    $D(D + d) \le 2^{27}$.

    **Raises:** `ValueError` for non-finite parameters, a model beyond the memory bounds or
    `laws` with $\partial h\,\partial\varphi^\top \ne 0$; `TypeError` for a bad `laws`;
    `RuntimeError` when `laws` is `None` and the Lie algebra is undecided.

    !!! note
        At a singular $\theta$ (e.g. a balanced init whose $(U; V)$ is rank-deficient), the
        two choices of `laws` can differ: $\mathrm{Lie}(W)(\theta)$, tangent to the orbit and
        hence to the level set, may be smaller than $\ker\partial h(\theta)$.
    """
    basis, tol, _ = kernel_basis(model, laws, rtol, key)
    kappa = basis.shape[1]
    if kappa == 0:
        return KernelInclusionTest(holds=True, residual=0.0, kernel_dimension=0, tolerance=tol)
    phi, theta, num_params, d = check_parameters(model)
    # One direction holds the d×D Jacobian, its tangent and the d×d metric: batch to the bound.
    per_direction = d * (num_params + d)
    if max(per_direction, kappa * d * d) > MAX_ENTRIES:
        raise ValueError(
            f"`model` is too large for the dense test: max(d·(D + d), κ·d²) with d={d}, "
            f"D={num_params}, κ={kappa} exceeds the memory bound MAX_ENTRIES = {MAX_ENTRIES}."
        )
    flat_theta, unravel = ravel_pytree(theta)
    directions = jax.vmap(unravel)(jnp.asarray(basis.T, dtype=flat_theta.dtype))
    batch_size = max(1, min(kappa, MAX_ENTRIES // (4 * per_direction)))
    m_norm, derivatives = _metric_derivatives(phi, theta, directions, batch_size)
    # The largest ‖∂M[v]‖_F over unit v ∈ K(θ): the spectral norm of v ↦ ∂M[v] on K(θ), which
    # does not depend on the basis.
    largest = float(np.linalg.norm(np.asarray(derivatives), 2))
    theta_norm = float(np.linalg.norm(flat_theta))
    scale = float(m_norm) / theta_norm if theta_norm > 0 else 0.0
    residual = largest / scale if scale > 0 else largest
    return KernelInclusionTest(
        holds=bool(residual <= tol), residual=residual, kernel_dimension=kappa, tolerance=tol
    )


def recoverability_test(
    model: AbstractFactorization,
    laws: Callable[[PyTree[Array]], PyTree[Array]] | None = None,
    *,
    rtol: float | None = None,
    key: PRNGKeyArray | None = None,
) -> RecoverabilityTest:
    r"""Test $\ker\partial\varphi(\theta) \cap \ker\partial h(\theta) = \{0\}$.

    Then, by the inverse function theorem, $\theta$ is locally a function of
    $(\varphi(\theta), h(\theta))$: intrinsic recoverability, which implies the intrinsic metric
    and intrinsic dynamic properties (THEORY §2). With complete laws (`laws=None`),
    $\dim K(\theta) = \dim\mathrm{Lie}(W)(\theta) - \mathrm{rank}\,\partial\varphi(\theta)$, so this is
    the Frobenius property.

    **Arguments:** as for [`manifolds.kernel_inclusion_test`][].

    **Returns:** a [`manifolds.RecoverabilityTest`][].

    **Raises:** as for [`manifolds.kernel_inclusion_test`][] (no memory bound beyond
    [`manifolds.lie_algebra_trace`][]'s).
    """
    basis, tol, gap = kernel_basis(model, laws, rtol, key)
    kappa = basis.shape[1]
    return RecoverabilityTest(
        holds=kappa == 0, kernel_dimension=kappa, tolerance=tol, singular_value_gap=gap
    )
