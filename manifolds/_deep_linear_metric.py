"""Closed-form intrinsic metric of balanced / relaxed-balanced deep linear networks."""

import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

from models import DeepLinear

from ._chain import chain_metric_kernel, chain_root
from ._intrinsic_metric import AbstractIntrinsicMetric, default_rtol, intrinsic_metric
from ._spectral import padded_svd, spectral_operator


class DeepLinearMetric(AbstractIntrinsicMetric):
    r"""Intrinsic metric of $Z = W_L\cdots W_1$ with $W_{j+1}^\top W_{j+1} - W_jW_j^\top = \lambda_j I$.

    $$K(Z)[X] = \sum_{j=1}^L a_j(ZZ^\top)\,X\,b_j(Z^\top Z),\quad
    a_j(s) = \prod_{k=j+1}^{L}\big(p^{-1}(s) + \Lambda_{k-1}\big),\quad
    b_j(s) = \prod_{k=1}^{j-1}\big(p^{-1}(s) + \Lambda_{k-1}\big),$$

    with $\Lambda_k = \lambda_1 + \dots + \lambda_k$ and $p(x) = \prod_{k=1}^L (x + \Lambda_{k-1})$
    as for the scalar chain ([`manifolds.DiagonalChainMetric`][]). When all $\lambda_j = 0$
    this is Arora et al.'s $\sum_j (ZZ^\top)^{(L-j)/L} X (Z^\top Z)^{(j-1)/L}$, valid for any
    widths; with some $\lambda_j \ne 0$ it needs square widths. Spectral functions are
    evaluated on the singular values of $Z$, as for [`manifolds.TwoLayerLinearMetric`][].
    """

    levels: Float[Array, " depth"]

    def __init__(self, lams: Float[Array, " depth_minus_one"]):
        r"""**Arguments:** `lams`, the $L-1$ values $\lambda_j$."""
        lams = jnp.atleast_1d(jnp.asarray(lams))
        if lams.ndim != 1:
            raise ValueError(f"`lams` must be a vector of L-1 values, got shape {lams.shape}.")
        self.levels = jnp.concatenate([jnp.zeros_like(lams[:1]), jnp.cumsum(lams)])

    def __call__(self, z: Float[Array, "n_out n_in"]) -> lx.FunctionLinearOperator:
        p, s_left, q, s_right = padded_svd(z)
        kernel = chain_metric_kernel(
            chain_root(s_left**2, self.levels), chain_root(s_right**2, self.levels), self.levels
        )
        return spectral_operator(p, kernel, q)


@intrinsic_metric.register
def _(model: DeepLinear, *, rtol: float | None = None) -> DeepLinearMetric:
    laws = model.conservation_laws()
    widths = model.widths
    rtol = default_rtol(laws[0].dtype) if rtol is None else rtol
    scale = max(1.0, max(float(jnp.sum(w**2)) for w in model.weights))
    lams = []
    for j, h in enumerate(laws):
        n = h.shape[0]
        lam = jnp.trace(h) / n
        residual = float(jnp.linalg.norm(h - lam * jnp.eye(n)))
        if residual > rtol * scale:
            raise ValueError(
                "The closed-form intrinsic metric of DeepLinear needs a relaxed-balanced "
                f"init, W_(j+1)^T W_(j+1) - W_j W_j^T = lam_j I; at hidden layer j={j + 1} "
                f"the residual ||h_j - lam_j I||_F is {residual:.3e} (lam_j = "
                f"{float(lam):.6g}), above the tolerance {rtol:.1e} * {scale:.3g}. Start "
                "from DeepLinear.balanced or DeepLinear.relaxed_balanced."
            )
        lams.append(lam)
    lams = jnp.stack(lams)
    nonzero = [j + 1 for j, lam in enumerate(lams) if abs(float(lam)) > rtol * scale]
    if nonzero and len(set(widths)) > 1:
        raise ValueError(
            f"DeepLinear with widths={widths} is relaxed balanced with nonzero lam_j at "
            f"hidden layers {nonzero}; the closed form covers nonzero lam_j only for "
            "square widths (all n_j equal), and balanced (all lam_j = 0) for any widths."
        )
    return DeepLinearMetric(lams)
