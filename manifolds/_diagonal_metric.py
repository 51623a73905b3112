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

    Accuracy: the root is found by monotone Newton iterations to rounding
    ([`optimistix.Newton`](https://docs.kidger.site/optimistix/api/root_find/)); $K$ is as
    accurate as $x$ (relative error $O(\varepsilon)$ away from double roots of $p$). It is
    differentiable in $z$ and in the $\lambda_j$ (implicit function theorem).
    """

    levels: Float[Array, " depth *shape"]

    def __init__(self, lams: Float[Array, " depth_minus_one *shape"]):
        r"""**Arguments:** `lams`, the conserved $\lambda_j$ stacked on a leading axis of
        length $L-1$ (exactly `DiagonalLinear.conservation_laws()`)."""
        lams = as_float_array(lams, "lams")
        if lams.ndim < 1 or lams.shape[0] < 1:
            raise ValueError(
                f"`lams` must have a leading axis of length L-1 >= 1, got shape {lams.shape}."
            )
        self.levels = jnp.concatenate([jnp.zeros_like(lams[:1]), jnp.cumsum(lams, axis=0)])

    def __call__(self, z: Float[Array, "*shape"]) -> lx.FunctionLinearOperator:
        # The conserved values fix z's shape, up to axes of length 1 they broadcast along
        # (one shared level set when they have no axes beyond the leading one).
        z = check_point(z)
        shape = self.levels.shape[1:]
        if shape and (len(shape) != z.ndim or any(a not in (1, b) for a, b in zip(shape, z.shape))):
            raise ValueError(
                f"`z` must have shape {shape}, the shape of the conserved values (up to "
                f"their axes of length 1), got shape {z.shape}."
            )
        x = chain_root(z**2, self.levels)
        prefix, suffix = prefix_suffix(x, self.levels)
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
    return DiagonalChainMetric(model.conservation_laws())
