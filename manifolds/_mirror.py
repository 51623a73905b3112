"""Is an intrinsic flow a mirror flow? The Hessian-metric test on g = K⁻¹."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from models._checks import as_float_tree, check_tolerance

from ._intrinsic_metric import default_rtol


class MirrorFlowResult(eqx.Module):
    r"""What [`manifolds.mirror_flow_test`][] returns.

    **Fields:** `holds` (`residual <= tolerance`); `residual`, the largest asymmetry
    $\max_{ijk}|\partial_k g_{ij} - \partial_j g_{ik}| / \max_{ijk}|\partial_k g_{ij}|$
    (`0.0` when $\partial g = 0$); `tolerance`; `min_eigenvalue` and `condition`, the
    smallest eigenvalue and the condition number of $K(z)$ (the residual is only as
    accurate as about `condition` $\times\,\varepsilon$).
    """

    holds: bool
    residual: float
    tolerance: float
    min_eigenvalue: float
    condition: float


def mirror_flow_test(
    K: Callable[[PyTree[Array]], lx.AbstractLinearOperator],
    z: PyTree[ArrayLike],
    *,
    rtol: float | None = None,
) -> MirrorFlowResult:
    r"""Test whether $g = K^{-1}$ is, near $z$, the Hessian of a potential.

    If $K(z)^{-1} = \nabla^2\psi(z)$, the intrinsic flow $z' = -K(z)\nabla f(z)$ is the mirror
    flow $\frac{d}{dt}\nabla\psi(z) = -\nabla f(z)$, and $\psi$ is the implicit regularizer.
    Third derivatives of $\psi$ are symmetric, so a Hessian metric has
    $$\partial_k g_{ij}(z) = \partial_j g_{ik}(z) \quad \text{for all } i, j, k$$
    (with $g$ symmetric, this is symmetry in all three indices). Conversely, if this holds
    on a simply connected neighbourhood, $g$ is a Hessian there (Poincaré's lemma twice).
    The test is pointwise: `holds=False` at one $z$ disproves the mirror structure;
    `holds=True` at one $z$ is evidence only, so test several points.

    $g$ is the inverse of the dense $d\times d$ matrix of $K(z)$ and $\partial g$ comes from
    `jax.jacfwd`, so this is for small $d$ and needs $K$ differentiable in $z$.

    **Arguments:**

    - `K`: $z \mapsto K(z)$, a `lineax` operator on $z$-shaped arrays (any
      [`manifolds.AbstractIntrinsicMetric`][], or a function).
    - `z`: the point, a (PyTree of) floating array(s).
    - `rtol`: accepted relative asymmetry; default $\sqrt{\varepsilon}$ of `z`'s dtype.

    **Returns:** a [`manifolds.MirrorFlowResult`][].

    **Raises:** `TypeError` for a non-callable `K` or non-float `z`; `ValueError` if $K(z)$
    is singular or not positive definite (the message gives its extreme eigenvalues), or
    not symmetric.
    """
    if not callable(K):
        raise TypeError(f"`K` must be a callable z -> lineax operator, got {type(K).__name__}.")
    z = as_float_tree(z, "z")
    leaves = jax.tree.leaves(z)
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise ValueError("`z` must have finite entries, got non-finite values (NaN or inf).")
    try:
        op = eqx.filter_eval_shape(K, z)
    except Exception as e:  # the metric's own error is the informative one
        raise type(e)(f"Evaluating `K(z)` failed: {e}") from e
    if not isinstance(op, lx.AbstractLinearOperator):
        raise TypeError(f"`K(z)` must return a lineax linear operator, got {type(op).__name__}.")
    dtype = jnp.result_type(*leaves)
    tolerance = default_rtol(dtype) if rtol is None else check_tolerance(rtol, "rtol", dtype)
    kmat, dg = _metric_and_derivative(K, z)
    kmat, dg = np.asarray(kmat), np.asarray(dg)
    eps = float(jnp.finfo(dtype).eps)
    scale = max(float(np.max(np.abs(kmat))), np.finfo(dtype).tiny)
    if not np.all(np.isfinite(kmat)):
        raise ValueError("`K(z)` must be finite, got non-finite entries.")
    asym_k = float(np.max(np.abs(kmat - kmat.T)))
    if asym_k > tolerance * scale:
        raise ValueError(
            f"`K(z)` must be symmetric: max |K - K^T| = {asym_k:.3e}, above rtol * max |K| "
            f"= {tolerance * scale:.3e}."
        )
    evals = np.linalg.eigvalsh(0.5 * (kmat + kmat.T))
    d = kmat.shape[0]
    if evals[0] <= d * eps * evals[-1]:
        raise ValueError(
            f"`K(z)` must be positive definite to define g = K^-1, but its smallest "
            f"eigenvalue is {evals[0]:.3e} (largest {evals[-1]:.3e}; needs > d * eps * "
            f"largest = {d * eps * evals[-1]:.3e}). K is singular at this z (e.g. a "
            "rank-deficient z); test at another point."
        )
    dscale = float(np.max(np.abs(dg)))
    asym = float(np.max(np.abs(dg - np.swapaxes(dg, 1, 2))))
    residual = asym / dscale if dscale > 0 else 0.0
    return MirrorFlowResult(
        holds=residual <= tolerance,
        residual=residual,
        tolerance=tolerance,
        min_eigenvalue=float(evals[0]),
        condition=float(evals[-1] / evals[0]),
    )


@eqx.filter_jit
def _metric_and_derivative(K, z):
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    inverse = lambda x: jnp.linalg.inv(K(unravel(x)).as_matrix())
    # dg[i, j, k] = ∂_k g_ij.
    return K(z).as_matrix(), jax.jacfwd(inverse)(flat)
