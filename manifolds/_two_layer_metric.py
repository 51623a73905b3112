"""Closed-form intrinsic metric of relaxed-balanced two-layer linear networks."""

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

from models import TwoLayerLinear

from ._intrinsic_metric import AbstractIntrinsicMetric, default_rtol, intrinsic_metric
from ._spectral import padded_svd, spectral_operator


class TwoLayerLinearMetric(AbstractIntrinsicMetric):
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

    def __init__(self, lam, rank: int):
        r"""**Arguments:** `lam` $=\lambda$; `rank`, the inner width $r$."""
        self.lam = jnp.asarray(lam)
        if int(rank) < 1:
            raise ValueError(f"`rank` must be a positive integer, got {rank}.")
        self.rank = int(rank)

    def __call__(self, z: Float[Array, "n m"]) -> lx.FunctionLinearOperator:
        p, s_left, q, s_right = padded_svd(z)
        quarter = self.lam**2 / 4
        alpha = jnp.sqrt(s_left**2 + quarter)
        beta = jnp.sqrt(s_right**2 + quarter)
        alpha = alpha - jnp.where(
            jnp.arange(alpha.shape[0]) >= self.rank, jnp.maximum(self.lam, 0), 0
        )
        beta = beta + jnp.where(jnp.arange(beta.shape[0]) >= self.rank, jnp.minimum(self.lam, 0), 0)
        return spectral_operator(p, alpha[:, None] + beta[None, :], q)


@intrinsic_metric.register
def _(model: TwoLayerLinear, *, rtol: float | None = None) -> TwoLayerLinearMetric:
    n, r, m = model.shape
    s = model.conservation_laws()
    rtol = default_rtol(s.dtype) if rtol is None else rtol
    lam = jnp.trace(s) / r
    residual = float(jnp.linalg.norm(s - lam * jnp.eye(r)))
    scale = float(jnp.sum(model.U**2) + jnp.sum(model.V**2))
    if residual > rtol * max(scale, 1.0):
        raise ValueError(
            "The closed-form intrinsic metric of TwoLayerLinear needs a relaxed-balanced "
            f"init, U^T U - V^T V = lam I_r; measured ||U^T U - V^T V - lam I||_F = "
            f"{residual:.3e} with lam = tr/r = {float(lam):.6g}, above the tolerance "
            f"{rtol:.1e} * {max(scale, 1.0):.3g}. Start from "
            "TwoLayerLinear.relaxed_balanced(key, n, r, m, lam) instead."
        )
    lam_f = float(lam)
    if (lam_f > 0 and r < n) or (lam_f < 0 and r < m):
        # The projector needs range Z = range U (or of V): rank Z must be r.
        sigma = jnp.linalg.svd(model.lift(), compute_uv=False)
        sigma_r = float(sigma[r - 1]) if r <= sigma.shape[0] else 0.0
        if sigma_r <= rtol * max(float(sigma[0]), 1.0):
            raise ValueError(
                f"TwoLayerLinear with lam={lam_f:.6g} and (n, r, m)={(n, r, m)} has an "
                "intrinsic metric only where rank Z = r (the projector onto range U is "
                f"read off the top-r singular vectors of Z), but sigma_r(Z) = {sigma_r:.3e}"
                + (f"; rank Z <= min(n, m) = {min(n, m)} < r" if r > min(n, m) else "")
                + "."
            )
    return TwoLayerLinearMetric(lam, r)
