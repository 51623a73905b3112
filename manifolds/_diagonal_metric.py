"""Closed-form intrinsic metric of diagonal linear chains."""

import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

from models import DiagonalLinear
from models._checks import as_float_array

from ._chain import chain_root, prefix_suffix
from ._intrinsic_metric import AbstractIntrinsicMetric, check_point, intrinsic_metric, metric_rtol
from ._operator import function_operator


class DiagonalChainMetric(AbstractIntrinsicMetric):
    r"""$K(z) = \mathrm{diag}\big(p'(x)\big)$ for $z = u_1\odot\cdots\odot u_L$.

    Entrywise, with the conserved $\lambda_j = u_{j+1}^2 - u_j^2$, $\Lambda_k = \sum_{j\le k}
    \lambda_j$ and $p(x) = \prod_{k=1}^L (x + \Lambda_{k-1})$, $x = u_1^2$ is the root of
    $p(x) = z^2$ with $x \ge \max(0, -\Lambda_k)$ and $K(z) = p'(x)$. For $L = 2$ this is
    $\sqrt{4z^2 + \lambda^2}$.

    Computed in the variable $y = \min_k u_k^2$ with the conserved offsets
    $c_k = u_k^2 - \min_l u_l^2 = \Lambda_{k-1} - \min_l \Lambda_l \ge 0$: then
    $u_k^2 = y + c_k$ is a sum of nonnegative numbers, so every factor keeps its relative
    precision, also near a repeated root of $p$ (two $u_k^2$ nearly equal and small) where
    $x + \Lambda_{k-1}$ would cancel. Built from a point of the level set (`squares`, what
    [`manifolds.intrinsic_metric`][] does), the offsets are differences of nearby numbers and
    exact to rounding; from `lams`, they inherit the rounding of $\sum_j \lambda_j$.

    Accuracy: the root is found by monotone Newton iterations to rounding
    ([`optimistix.Newton`](https://docs.kidger.site/optimistix/api/root_find/)); $K$ is a sum
    of products of the factors $y + c_k$, accurate to a few ulps. It is differentiable in
    $z$ and in the offsets (implicit function theorem).
    """

    offsets: Float[Array, " depth *shape"]

    def __init__(
        self,
        lams: Float[Array, " depth_minus_one *shape"] | None = None,
        *,
        squares: Float[Array, " depth *shape"] | None = None,
    ):
        r"""**Arguments:** exactly one of

        - `lams`: the conserved $\lambda_j$ stacked on a leading axis of length $L-1$
          (`DiagonalLinear.conservation_laws()`);
        - `squares`: the squared factors $u_k^2$ of one point of the level set, stacked on a
          leading axis of length $L$.
        """
        if (lams is None) == (squares is None):
            raise TypeError("Pass exactly one of `lams` and `squares`.")
        if lams is not None:
            lams = as_float_array(lams, "lams")
            if lams.ndim < 1 or lams.shape[0] < 1:
                raise ValueError(
                    f"`lams` must have a leading axis of length L-1 >= 1, got shape {lams.shape}."
                )
            levels = jnp.concatenate([jnp.zeros_like(lams[:1]), jnp.cumsum(lams, axis=0)])
        else:
            levels = as_float_array(squares, "squares")
            if levels.ndim < 1 or levels.shape[0] < 2:
                raise ValueError(
                    f"`squares` must have a leading axis of length L >= 2, got shape "
                    f"{levels.shape}."
                )
        # Sterbenz: the difference of two nearby floats is exact.
        self.offsets = levels - jnp.min(levels, axis=0, keepdims=True)

    def __call__(self, z: Float[Array, "*shape"]) -> lx.FunctionLinearOperator:
        # The conserved values fix z's shape, up to axes of length 1 they broadcast along
        # (one shared level set when they have no axes beyond the leading one).
        z = check_point(z)
        shape = self.offsets.shape[1:]
        if shape and (len(shape) != z.ndim or any(a not in (1, b) for a, b in zip(shape, z.shape))):
            raise ValueError(
                f"`z` must have shape {shape}, the shape of the conserved values (up to "
                f"their axes of length 1), got shape {z.shape}."
            )
        # K depends on the offsets' differences only; re-anchoring at min 0 (exact when
        # already so) keeps a root y >= 0 for every z, whatever was done to the field.
        offsets = self.offsets - jnp.min(self.offsets, axis=0, keepdims=True)
        y = chain_root(z**2, offsets)
        prefix, suffix = prefix_suffix(y, offsets)
        diag = jnp.sum(prefix * suffix, axis=0).reshape(z.shape)
        return function_operator(
            lambda g: diag * g,
            jax.eval_shape(lambda: diag * z),  # with z's sharding, if any
            (lx.diagonal_tag, lx.symmetric_tag, lx.positive_semidefinite_tag),
        )


@intrinsic_metric.register
def _(model: DiagonalLinear, *, rtol: float | None = None) -> DiagonalChainMetric:
    # Every level set of a diagonal chain has a closed form: nothing to check but `rtol`.
    metric_rtol(rtol, model.factors[0].dtype)
    return DiagonalChainMetric(squares=jnp.stack([u**2 for u in model.factors]))
