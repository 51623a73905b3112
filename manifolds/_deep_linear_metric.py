"""Closed-form intrinsic metric of balanced / relaxed-balanced deep linear networks."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from models import DeepLinear
from models._checks import as_float_array

from ._chain import chain_root
from ._intrinsic_metric import check_domain, check_matrix_shape, intrinsic_metric, metric_rtol
from ._spectral import AbstractSpectralMetric


class DeepLinearMetric(AbstractSpectralMetric):
    r"""Intrinsic metric of $Z = W_L\cdots W_1$ with $W_{j+1}^\top W_{j+1} - W_jW_j^\top = \lambda_j I$.

    $$K(Z)[X] = \sum_{j=1}^L a_j(ZZ^\top)\,X\,b_j(Z^\top Z),\quad
    a_j(s) = \prod_{k=j+1}^{L}\big(p^{-1}(s) + \Lambda_{k-1}\big),\quad
    b_j(s) = \prod_{k=1}^{j-1}\big(p^{-1}(s) + \Lambda_{k-1}\big),$$

    with $\Lambda_k = \lambda_1 + \dots + \lambda_k$ and $p(x) = \prod_{k=1}^L (x + \Lambda_{k-1})$
    as for the scalar chain ([`manifolds.DiagonalChainMetric`][]). When all $\lambda_j = 0$
    this is Arora et al.'s $\sum_j (ZZ^\top)^{(L-j)/L} X (Z^\top Z)^{(j-1)/L}$, valid for any
    widths; with some $\lambda_j \ne 0$ it needs square widths. Spectral functions are
    evaluated on the singular values of $Z$, as for [`manifolds.TwoLayerLinearMetric`][].

    A bottleneck (a hidden width $k < \min(n_0, n_L)$) makes $Z$ rank-deficient: its
    $\sigma_i$, $i > k$, are zero, and an SVD returns rounding noise $O(\varepsilon\|Z\|)$
    there, which the fractional powers $s^{(L-j)/L}$ would amplify to
    $O((\varepsilon\|Z\|)^{2/L})$. `rank` $= k$ (given by
    [`manifolds.intrinsic_metric`][] from the widths) sets them to exactly zero, so $K$ stays
    accurate to $O(\varepsilon\|Z\|)$ and the intrinsic flow stays on
    $\{\mathrm{rank}\,Z \le k\}$, where the Euclidean flow lives.
    """

    levels: Float[Array, " depth"]
    rank: int | None = eqx.field(static=True)
    shape: tuple[int, int] | None = eqx.field(static=True)

    def __init__(
        self,
        lams: Float[Array, " depth_minus_one"],
        rank: int | None = None,
        shape: tuple[int, int] | None = None,
    ):
        r"""**Arguments:** `lams`, the $L-1$ values $\lambda_j$; `rank`, an upper bound on
        the rank of $Z$ known from the architecture (the narrowest width), or `None`;
        `shape`, the $(n_L, n_0)$ of $Z$ (`None`: not checked). `intrinsic_metric` sets
        both."""
        self.shape = None if shape is None else check_matrix_shape(shape)
        lams = jnp.atleast_1d(as_float_array(lams, "lams"))
        if lams.ndim != 1:
            raise ValueError(f"`lams` must be a vector of L-1 values, got shape {lams.shape}.")
        if rank is not None and (isinstance(rank, bool) or int(rank) != rank or int(rank) < 1):
            raise ValueError(f"`rank` must be a positive integer or None, got {rank!r}.")
        self.levels = jnp.concatenate([jnp.zeros_like(lams[:1]), jnp.cumsum(lams)])
        self.rank = None if rank is None else int(rank)

    def spectral_factors(self, s_left, s_right):
        r"""$L$ terms: $a_j = \prod_{k>j} f_k(x)$, $b_j = \prod_{k<j} f_k(x')$ with
        $f_k(x) = x + \Lambda_{k-1}$, $x = p^{-1}(s)$, $x' = p^{-1}(s')$.

        Divided differences through $x$: $a^{[1]}_j(s, t) = [A_j](x, y)\,/\,[p](x, y)$,
        with, for a product of linear factors, $[\prod_{k\in S} f_k](x, y) = \sum_{k\in S}
        \prod_{l\in S, l<k} f_l(x)\prod_{l\in S, l>k} f_l(y)$: a sum of nonnegative terms,
        accurate to rounding also for $x \approx y$.
        """
        depth = self.levels.shape[0]

        def side(s, terms):
            if self.rank is not None:
                s = jnp.where(jnp.arange(s.shape[0]) >= self.rank, 0.0, s)
            x = chain_root(s, self.levels)
            f = x[None, :] + self.levels[:, None]  # f_k(x_i), (L, n)
            values = jnp.stack([_product(f, ks) for ks in terms])
            dp = _product_divided_difference(f, range(depth))
            dp = jnp.where(dp > 0, dp, 1.0)  # 0 only where both s are 0 at a double root
            diffs = jnp.stack([_product_divided_difference(f, ks) / dp for ks in terms])
            return values, diffs

        a, da = side(s_left, [range(j + 1, depth) for j in range(depth)])
        b, db = side(s_right, [range(j) for j in range(depth)])
        return a, b, da, db


def _product(f, ks):
    out = jnp.ones_like(f[0])
    for k in ks:
        out = out * f[k]
    return out


def _product_divided_difference(f, ks):
    ks = list(ks)
    total = jnp.zeros(f.shape[1:] * 2, f.dtype)
    for i in range(len(ks)):
        total = total + jnp.outer(_product(f, ks[:i]), _product(f, ks[i + 1 :]))
    return total


@intrinsic_metric.register
def _(model: DeepLinear, *, rtol: float | None = None) -> DeepLinearMetric:
    # Works under jit and vmap (checks by value, eqx.error_if when traced). Tolerances are
    # relative to max_j ||W_j||_F^2, the scale of the laws h_j.
    laws = model.conservation_laws()
    widths = model.widths
    rtol = metric_rtol(rtol, laws[0].dtype)
    scale = jnp.max(jnp.stack([jnp.sum(w**2) for w in model.weights]))
    lams = jnp.stack([jnp.trace(h) / h.shape[0] for h in laws])
    residuals = jnp.stack(
        [
            jnp.linalg.norm(h - lam * jnp.eye(h.shape[0], dtype=h.dtype))
            for h, lam in zip(laws, lams)
        ]
    )
    lams = check_domain(
        lams,
        jnp.any(residuals > rtol * scale),
        "The closed-form intrinsic metric of DeepLinear needs a relaxed-balanced init, "
        "W_(j+1)^T W_(j+1) - W_j W_j^T = lam_j I at every hidden layer j, to `rtol` relative "
        "to max_j ||W_j||_F^2. Start from DeepLinear.balanced or DeepLinear.relaxed_balanced.",
        lambda: (
            "Measured ||h_j - lam_j I||_F = "
            + ", ".join(f"{float(r):.3e}" for r in residuals)
            + " (lam_j = "
            + ", ".join(f"{float(lam):.6g}" for lam in lams)
            + f"), tolerance {rtol:.1e} * {float(scale):.3g}."
        ),
    )
    # λ_j within rounding of 0 are balanced layers.
    lams = jnp.where(jnp.abs(lams) <= rtol * scale, 0.0, lams)
    if len(set(widths)) > 1:
        lams = check_domain(
            lams,
            jnp.any(lams != 0),
            f"DeepLinear with widths={widths} is relaxed balanced with some lam_j != 0; the "
            "closed form covers nonzero lam_j only for square widths (all n_j equal), and "
            "balanced (all lam_j = 0) for any widths.",
            lambda: "Measured lam_j = " + ", ".join(f"{float(lam):.6g}" for lam in lams) + ".",
        )
    return DeepLinearMetric(lams, rank=min(widths), shape=(widths[-1], widths[0]))
