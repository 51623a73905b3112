r"""Operators diagonal in a pair of singular bases: $X \mapsto P(\mathcal{K}\circ P^\top XQ)Q^\top$.

Every closed-form intrinsic metric of a linear chain has this form with $Z = P\Sigma Q^\top$
(full SVD): it is a sum of terms $a(ZZ^\top)\,X\,b(Z^\top Z)$, and spectral functions of
$ZZ^\top$, $Z^\top Z$ act diagonally in $P$, $Q$. Computing them from the singular values of
$Z$ (not the eigenvalues of $ZZ^\top$) gives them to $O(\varepsilon\|Z\|)$ absolute accuracy,
where $(ZZ^\top)^{1/2}$ from an eigendecomposition is only accurate to $O(\sqrt{\varepsilon}\|Z\|)$
at small singular values (half the digits lost).
"""

import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float


def padded_svd(z: Float[Array, "n m"]):
    """Full SVD $Z = P\\,\\mathrm{diag}(\\sigma)\\,Q^\\top$ with $\\sigma$ zero-padded on each side.

    Returns `(P, sigma_left, Q, sigma_right)`, `sigma_left` of length $n$, `sigma_right` of
    length $m$, both sorted in decreasing order.
    """
    n, m = z.shape
    p, s, qt = jnp.linalg.svd(z, full_matrices=True)
    k = s.shape[0]
    s_left = jnp.zeros(n, s.dtype).at[:k].set(s)
    s_right = jnp.zeros(m, s.dtype).at[:k].set(s)
    return p, s_left, qt.T, s_right


def spectral_operator(
    p: Float[Array, "n n"], kernel: Float[Array, "n m"], q: Float[Array, "m m"]
) -> lx.FunctionLinearOperator:
    r"""$X \mapsto P(\mathcal{K}\circ P^\top X Q)Q^\top$, tagged symmetric PSD.

    The caller guarantees $\mathcal{K} \ge 0$ entrywise, which makes the operator PSD.
    """

    def mv(x):
        return p @ (kernel * (p.T @ x @ q)) @ q.T

    # The structure of mv's output, so that input and output structures agree also where
    # JAX annotates values with a sharding (inside `jax.shard_map`).
    struct = jax.eval_shape(mv, jax.ShapeDtypeStruct((p.shape[0], q.shape[0]), kernel.dtype))
    return lx.FunctionLinearOperator(
        mv, struct, tags=(lx.symmetric_tag, lx.positive_semidefinite_tag)
    )
