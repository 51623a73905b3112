"""Closed-form intrinsic metric of relaxed-balanced two-layer linear networks."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from models import TwoLayerLinear
from models._checks import as_float_array, check_positive_int

from ._intrinsic_metric import check_domain, check_matrix_shape, intrinsic_metric, metric_rtol
from ._spectral import AbstractSpectralMetric


class TwoLayerLinearMetric(AbstractSpectralMetric):
    r"""Intrinsic metric of $Z = UV^\top$ on the level set $U^\top U - V^\top V = \lambda I_r$.

    $$K_\lambda(Z)[X] = (ZZ^\top + \tfrac{\lambda^2}{4}I)^{1/2}X + X(Z^\top Z + \tfrac{\lambda^2}{4}I)^{1/2}
    - \lambda^+ (I - P_Z)X + \lambda^- X(I - P_{Z^\top}),$$

    where the correction terms appear only when $r < n$ ($\lambda > 0$) or $r < m$
    ($\lambda < 0$), $P_Z$ / $P_{Z^\top}$ are the projectors onto the top-$r$ left / right
    singular vectors of $Z$, $\lambda^+ = \max(\lambda, 0)$ and $\lambda^- = \min(\lambda, 0)$.
    Derivation: $A = UU^\top$ solves $A^2 - \lambda A = ZZ^\top$ and $B = VV^\top$ solves
    $B^2 + \lambda B = Z^\top Z$; off the range of $U$ (when $r < n$) the root is the
    negative one.

    In the singular bases $Z = P\Sigma Q^\top$, $K$ multiplies $P^\top XQ$ entrywise by
    $\alpha_i + \beta_k$, with $\alpha_i = \sqrt{\sigma_i^2 + \lambda^2/4}$ (less $\lambda^+$ for
    $i \ge r$), $\beta_k = \sqrt{\sigma_k^2 + \lambda^2/4}$ (plus $\lambda^-$ for $k \ge r$).

    Accuracy: singular values come from an SVD of $Z$, so $K$ is accurate to
    $O(\varepsilon\|Z\|)$ absolute even at (near-)zero singular values, where the PSD square
    root of $ZZ^\top$ would only give $O(\sqrt{\varepsilon}\|Z\|)$. In
    the projector-corrected cases $K$ is only defined on $\{\mathrm{rank}\,Z = r\}$, and its
    error grows like $\varepsilon\|Z\|/(\sigma_r - \sigma_{r+1})$ as $\sigma_r(Z) \to 0$.
    """

    lam: Float[Array, ""]
    rank: int = eqx.field(static=True)
    shape: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, lam, rank: int, shape: tuple[int, int] | None = None):
        r"""**Arguments:** `lam` $=\lambda$; `rank`, the inner width $r$; `shape`, the
        $(n, m)$ of $Z$ (`None`: not checked), as `intrinsic_metric` sets it."""
        lam = as_float_array(lam, "lam")
        if lam.ndim != 0:
            raise ValueError(f"`lam` must be a scalar, got an array of shape {lam.shape}.")
        self.lam = lam
        self.rank = check_positive_int(rank, "rank")
        self.shape = None if shape is None else check_matrix_shape(shape)

    def spectral_factors(self, s_left, s_right):
        r"""$K = A\,X + X\,B$: two terms, $(a, b) = (\alpha, 1)$ and $(1, \beta)$.

        Divided differences without cancellation: $[\sqrt{\cdot + \lambda^2/4}](s, s') =
        1/(\tilde\alpha + \tilde\alpha')$, and the projector's jump $\lambda^\pm$ across the
        split at index $r$ divided by the gap $s_i - s_j$ (positive on the domain, where
        $\mathrm{rank}\,Z = r$).
        """
        quarter = self.lam**2 / 4

        def side(s, jump):
            root = jnp.sqrt(s + quarter)
            shift = jnp.where(jnp.arange(s.shape[0]) >= self.rank, jump, 0.0)
            total = root[:, None] + root[None, :]
            smooth = 1.0 / jnp.where(total > 0, total, 1.0)  # 0 only where both s are 0
            dshift = shift[:, None] - shift[None, :]
            gap = s[:, None] - s[None, :]
            cross = jnp.where(dshift != 0, dshift / jnp.where(dshift != 0, gap, 1.0), 0.0)
            return root + shift, smooth + cross

        alpha, dalpha = side(s_left, -jnp.maximum(self.lam, 0))
        beta, dbeta = side(s_right, jnp.minimum(self.lam, 0))
        n, m = s_left.shape[0], s_right.shape[0]
        if self.rank < n or self.rank < m:
            # The projector branch is defined only where rank Z = r: raise (jit-safe) where
            # Z is numerically of lower rank, rather than return a projector onto noise.
            projector = ((self.lam > 0) & (self.rank < n)) | ((self.lam < 0) & (self.rank < m))
            s_r = s_left[self.rank - 1] if self.rank <= min(n, m) else jnp.zeros_like(s_left[0])
            tol = (max(n, m) * jnp.finfo(s_left.dtype).eps) ** 2 * s_left[0]
            alpha = eqx.error_if(
                alpha,
                projector & (s_r <= tol),
                "TwoLayerLinearMetric: K(z) with lam != 0 and r < n (lam > 0) or r < m "
                "(lam < 0) is defined only where rank z = r, but sigma_r(z) <= "
                "max(n, m) * eps * sigma_1(z): z is numerically of lower rank.",
            )
        one_n, one_m = jnp.ones_like(alpha), jnp.ones_like(beta)
        return (
            jnp.stack([alpha, one_n]),
            jnp.stack([one_m, beta]),
            jnp.stack([dalpha, jnp.zeros((n, n), alpha.dtype)]),
            jnp.stack([jnp.zeros((m, m), beta.dtype), dbeta]),
        )


@intrinsic_metric.register
def _(model: TwoLayerLinear, *, rtol: float | None = None) -> TwoLayerLinearMetric:
    # Works under jit and vmap: the checks are values (eqx.error_if when traced); only the
    # shape (n, r, m) is static. Tolerances are relative to ‖U‖² + ‖V‖², the scale of
    # UᵀU − VᵀV, so a small initialization is held to the same relative standard.
    n, r, m = model.shape
    s = model.conservation_laws()
    rtol = metric_rtol(rtol, s.dtype)
    lam = jnp.trace(s) / r
    residual = jnp.linalg.norm(s - lam * jnp.eye(r, dtype=s.dtype))
    scale = jnp.sum(model.U**2) + jnp.sum(model.V**2)
    lam = check_domain(
        lam,
        residual > rtol * scale,
        "The closed-form intrinsic metric of TwoLayerLinear needs a relaxed-balanced init, "
        "U^T U - V^T V = lam I_r, to `rtol` relative to ||U||^2 + ||V||^2. Start from "
        "TwoLayerLinear.relaxed_balanced(key, n, r, m, lam) instead.",
        lambda: (
            f"Measured ||U^T U - V^T V - lam I||_F = {float(residual):.3e} with lam = "
            f"tr/r = {float(lam):.6g}, above {rtol:.1e} * {float(scale):.3g}."
        ),
    )
    # λ within rounding of 0 is the balanced level set: no projector term.
    lam = jnp.where(jnp.abs(lam) <= rtol * scale, 0.0, lam)
    if r < n or r < m:
        # With λ > 0 and r < n (λ < 0 and r < m) the projector onto range U (range V) is
        # read off the top-r singular vectors of Z: rank Z must be r.
        projector = ((lam > 0) & (r < n)) | ((lam < 0) & (r < m))
        sigma = jnp.linalg.svd(model.lift(), compute_uv=False)
        sigma_r = sigma[r - 1] if r <= sigma.shape[0] else jnp.zeros_like(sigma[0])
        lam = check_domain(
            lam,
            projector & (sigma_r <= rtol * sigma[0]),
            f"TwoLayerLinear with (n, r, m)={(n, r, m)} and lam > 0 with r < n, or lam < 0 "
            "with r < m, has an intrinsic metric only where rank Z = r (the projector onto the range of U or "
            "V is read off the top-r singular vectors of Z), but sigma_r(Z) <= rtol * "
            "sigma_1(Z)"
            + (f"; rank Z <= min(n, m) = {min(n, m)} < r" if r > min(n, m) else "")
            + ".",
            lambda: (
                f"Measured lam = {float(lam):.6g}, sigma_r(Z) = {float(sigma_r):.3e}, "
                f"sigma_1(Z) = {float(sigma[0]):.3e}."
            ),
        )
    return TwoLayerLinearMetric(lam, r, (n, m))
