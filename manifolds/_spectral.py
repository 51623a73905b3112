r"""Operators diagonal in a pair of singular bases: $X \mapsto P(\mathcal{K}\circ P^\top XQ)Q^\top$.

Every closed-form intrinsic metric of a linear chain has this form with $Z = P\Sigma Q^\top$
(full SVD): it is a sum of terms $a(ZZ^\top)\,X\,b(Z^\top Z)$, and spectral functions of
$ZZ^\top$, $Z^\top Z$ act diagonally in $P$, $Q$. Computing them from the singular values of
$Z$ (not the eigenvalues of $ZZ^\top$) gives them to $O(\varepsilon\|Z\|)$ absolute accuracy,
where $(ZZ^\top)^{1/2}$ from an eigendecomposition is only accurate to $O(\sqrt{\varepsilon}\|Z\|)$
at small singular values (half the digits lost).

Derivatives do not go through the SVD (whose derivative divides by gaps between singular
values, and by the singular values themselves for a non-square $Z$, so it is infinite at
every rank-deficient $Z$). They come from the Daleckii–Krein formula instead: for symmetric
$A = P\,\mathrm{diag}(s)P^\top$, $\mathrm{D}a(A)[H] = P\big(a^{[1]}\circ P^\top HP\big)P^\top$
with the divided differences $a^{[1]}_{ij} = (a(s_i) - a(s_j))/(s_i - s_j)$ ($a'(s_i)$ on
ties), which each metric supplies in a form without cancellation.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jaxtyping import Array, Float

from models._checks import as_float_array

from ._intrinsic_metric import AbstractIntrinsicMetric, check_point
from ._operator import function_operator


def padded_svd(z: Float[Array, "n m"]):
    """Full SVD $Z = P\\,\\mathrm{diag}(\\sigma)\\,Q^\\top$ with $\\sigma$ zero-padded on each side.

    Returns `(P, sigma_left, Q, sigma_right)`, `sigma_left` of length $n$, `sigma_right` of
    length $m$, both sorted in decreasing order. Not differentiable for non-square $Z$
    (JAX has no derivative of the full SVD): differentiate through
    [`manifolds.AbstractSpectralMetric`][] instead.
    """
    n, m = z.shape
    p, s, qt = jnp.linalg.svd(z, full_matrices=True)
    k = s.shape[0]
    s_left = jnp.zeros(n, s.dtype).at[:k].set(s)
    s_right = jnp.zeros(m, s.dtype).at[:k].set(s)
    return p, s_left, qt.T, s_right


def _operator(mv, z):
    # The structure of mv's output, so that input and output structures agree also where
    # JAX annotates values with a sharding (inside `jax.shard_map`).
    struct = jax.eval_shape(mv, jax.ShapeDtypeStruct(z.shape, z.dtype))
    return function_operator(mv, struct, (lx.symmetric_tag, lx.positive_semidefinite_tag))


def spectral_operator(
    p: Float[Array, "n n"], kernel: Float[Array, "n m"], q: Float[Array, "m m"]
) -> lx.FunctionLinearOperator:
    r"""$X \mapsto P(\mathcal{K}\circ P^\top X Q)Q^\top$, tagged symmetric PSD.

    The caller guarantees $\mathcal{K} \ge 0$ entrywise, which makes the operator PSD.
    Derivatives go through `p`, `kernel` and `q` as given.
    """
    return _operator(lambda x: p @ (kernel * (p.T @ x @ q)) @ q.T, p @ kernel @ q.T)


class AbstractSpectralMetric(AbstractIntrinsicMetric):
    r"""An intrinsic metric $K(Z)[X] = \sum_t a_t(ZZ^\top)\,X\,b_t(Z^\top Z)$ on matrices.

    In the singular bases of $Z = P\Sigma Q^\top$ it multiplies $P^\top XQ$ entrywise by
    $\mathcal{K}_{il} = \sum_t a_t(\sigma_i^2)\,b_t(\sigma_l^2)$ ($\sigma$ zero-padded to
    $n$ on the left, $m$ on the right). Subclasses give the factors and their divided
    differences ([`manifolds.AbstractSpectralMetric.spectral_factors`][]); calling the
    metric, and differentiating it in $Z$ (any shape and rank, by the Daleckii–Krein
    formula) and in its fields, is written once here. The factors may also depend on the
    index of a singular value (a projector onto the top $r$ singular vectors), provided the
    divided differences across that split are given: they are then the projector's
    derivative, finite where the split has a gap.

    `shape`, the $(n, m)$ of the level set's $Z$ (`None`: any), is checked on every call.
    """

    shape: eqx.AbstractVar[tuple[int, int] | None]

    @abc.abstractmethod
    def spectral_factors(
        self, s_left: Float[Array, " n"], s_right: Float[Array, " m"]
    ) -> tuple[
        Float[Array, "terms n"],
        Float[Array, "terms m"],
        Float[Array, "terms n n"],
        Float[Array, "terms m m"],
    ]:
        r"""`(a, b, da, db)`: $a_t(s_i)$, $b_t(s'_l)$ and the divided differences
        $a^{[1]}_t(s_i, s_j)$, $b^{[1]}_t(s'_l, s'_k)$, for the decreasing squared singular
        values `s_left` ($n$ of them) and `s_right` ($m$). Where both arguments of a
        divided difference are exactly zero, any finite value will do (it multiplies zero).
        """

    def __call__(self, z: Float[Array, "n m"]) -> lx.FunctionLinearOperator:
        z = as_float_array(z, "z")
        if z.ndim != 2:
            raise ValueError(f"`z` must be a matrix (2 dimensions), got shape {z.shape}.")
        z = check_point(z, self.shape)
        return _operator(lambda x: _spectral_apply(self, z, x), z)


def _kernel(metric, s_left, s_right):
    a, b, _, _ = metric.spectral_factors(s_left, s_right)
    return jnp.einsum("ti,tl->il", a, b)


@eqx.filter_custom_jvp
def _spectral_apply(metric, z, x):
    p, s_left, q, s_right = padded_svd(z)
    return p @ (_kernel(metric, s_left**2, s_right**2) * (p.T @ x @ q)) @ q.T


@_spectral_apply.def_jvp
def _spectral_apply_jvp(primals, tangents):
    metric, z, x = primals
    t_metric, dz, dx = tangents
    p, s_left, q, s_right = padded_svd(z)
    sl2, sr2 = s_left**2, s_right**2
    y = p.T @ x @ q
    a, b, da, db = metric.spectral_factors(sl2, sr2)
    kernel = jnp.einsum("ti,tl->il", a, b)
    out = kernel * y
    dout = jnp.zeros_like(out)
    if dx is not None:
        dout = dout + kernel * (p.T @ dx @ q)
    if t_metric is not None and any(t is not None for t in jtu.tree_leaves(t_metric)):
        dynamic, static = eqx.partition(metric, eqx.is_inexact_array)
        t_dynamic = jtu.tree_map(
            lambda t, d: d if d is None else (jnp.zeros_like(d) if t is None else t),
            t_metric,
            dynamic,
            is_leaf=lambda t: t is None,
        )
        _, dkernel = jax.jvp(
            lambda d: _kernel(eqx.combine(d, static), sl2, sr2), (dynamic,), (t_dynamic,)
        )
        dout = dout + dkernel * y
    if dz is not None:
        # In the singular bases: E = PᵀdZ Q, Pᵀ d(ZZᵀ) P = EΣᵀ + ΣEᵀ, Qᵀ d(ZᵀZ) Q = EᵀΣ + ΣᵀE.
        n, m = z.shape
        sigma = (
            jnp.zeros((n, m), z.dtype)
            .at[jnp.arange(min(n, m)), jnp.arange(min(n, m))]
            .set(s_left[: min(n, m)])
        )
        e = p.T @ dz @ q
        g_left = e @ sigma.T + sigma @ e.T
        g_right = e.T @ sigma + sigma.T @ e
        dout = dout + jnp.einsum("tij,jl,tl->il", da * g_left[None], y, b)
        dout = dout + jnp.einsum("ti,il,tlk->ik", a, y, db * g_right[None])
    return p @ out @ q.T, p @ dout @ q.T
