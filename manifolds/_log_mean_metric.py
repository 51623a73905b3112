r"""The log-mean intrinsic metric of relaxed-balanced linear neural ODEs."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float

from models import LinearNeuralODE

from ._intrinsic_metric import (
    AbstractIntrinsicMetric,
    check_domain,
    check_point,
    default_rtol,
    intrinsic_metric,
    metric_rtol,
)
from ._spectral import padded_svd, spectral_operator

# Below this |x|, sinh(x)/x is its Taylor polynomial 1 + x²/6 + x⁴/120: the next term,
# x⁶/5040, is under 2·10⁻¹⁹ there.
_SINHC_SERIES = 1e-2


def _sinhc(x):
    small = jnp.abs(x) < _SINHC_SERIES
    safe = jnp.where(small, 1.0, x)  # no 0/0 in either branch, nor in its gradient
    x2 = x * x
    return jnp.where(small, 1 + x2 / 6 + x2 * x2 / 120, jnp.sinh(safe) / safe)


def log_mean_kernel(sigma: Float[Array, " n"]) -> Float[Array, "n n"]:
    r"""$\mathcal{L}_{ik} = \dfrac{\sigma_i^2 - \sigma_k^2}{\log\sigma_i^2 - \log\sigma_k^2}$,
    $\mathcal{L}_{ii} = \sigma_i^2$: the logarithmic mean of $\sigma_i^2$ and $\sigma_k^2$.

    Computed as $\sigma_i\sigma_k\,\operatorname{sinhc}(\log\sigma_i - \log\sigma_k)$ with
    $\operatorname{sinhc}(x) = \sinh(x)/x$: with $a = \log\sigma_i^2$, $b = \log\sigma_k^2$ and
    $\delta = a - b$, the log-mean is $e^{(a+b)/2}\sinh(\delta/2)/(\delta/2)$. No difference of
    nearly equal numbers is divided by another, so it is accurate to a few ulps for
    $\sigma_i \approx \sigma_k$ (where $\operatorname{sinhc}$ is its Taylor series) as elsewhere.
    """
    log_sigma = jnp.log(sigma)
    return sigma[:, None] * sigma[None, :] * _sinhc(log_sigma[:, None] - log_sigma[None, :])


class LogMeanMetric(AbstractIntrinsicMetric):
    r"""Intrinsic metric of linear neural ODEs on the level sets $H(s) = \lambda(s)I$.

    $$K(z)[X] = \int_0^1 (zz^\top)^{1-s}\,X\,(z^\top z)^{s}\,ds
    = P\big(\mathcal{L}\circ(P^\top X Q)\big)Q^\top,\qquad z = P\Sigma Q^\top,$$

    with the logarithmic-mean kernel
    $\mathcal{L}_{ik} = (\sigma_i^2 - \sigma_k^2)/(\log\sigma_i^2 - \log\sigma_k^2)$,
    $\mathcal{L}_{ii} = \sigma_i^2$ ([`manifolds.log_mean_kernel`][]), since
    $\int_0^1 a^{1-s}b^s ds = (a - b)/(\log a - \log b)$. It does not depend on
    $\lambda(\cdot)$, so it has no fields: one metric serves every relaxed-balanced level
    set. It is the $L\to\infty$ limit of $\frac1L$ times the balanced deep linear metric
    $\sum_{j=1}^L (zz^\top)^{(L-j)/L}X(z^\top z)^{(j-1)/L}$ ([`manifolds.DeepLinearMetric`][]),
    the Riemann sum of the integral.

    $z$ must be invertible, as every end-to-end map of a linear neural ODE is
    ($\det z = e^{\int_0^1\operatorname{tr}A}$): a numerically singular $z$ (smallest
    singular value $\le n\varepsilon\sigma_{\max}$, as `numpy.linalg.matrix_rank` decides)
    or a non-finite one raises an error, also under `jax.jit` (`equinox.error_if`).

    `manifolds.intrinsic_metric(model)` returns it for a [`models.LinearNeuralODE`][]
    whose conservation law is a multiple of the identity on the model's `s_grid`:
    $\max_s\|H(s) - \tfrac1n\operatorname{tr}H(s)\,I\|_F \le$ `rtol` $\cdot\max(1,
    \max_s\|A(s)\|_F^2, \max_s\|H(s)\|_F)$, else a `ValueError` with the measured
    residual. The default `rtol` is $\varepsilon^{1/4}$ ($1.2\cdot10^{-4}$ in float64),
    looser than for the other closed forms: a relaxed-balanced init projected onto
    polynomials of degree $p$ ([`models.LinearNeuralODE.relaxed_balanced`][]) has a
    residual that decays geometrically in $p$, and the error of $K(\varphi(A))$ against
    the Galerkin metric $M(A)$ is observed to be of the order of the residual squared.
    """

    def __call__(self, z: Float[Array, "n n"]) -> lx.FunctionLinearOperator:
        if z.ndim != 2 or z.shape[0] != z.shape[1]:
            raise ValueError(f"`z` must be a square matrix, got shape {z.shape}.")
        z = check_point(z)
        p, sigma, q, _ = padded_svd(z)
        eps = jnp.finfo(sigma.dtype).eps
        invertible = sigma[-1] > z.shape[0] * eps * sigma[0]
        sigma = eqx.error_if(
            sigma,
            ~invertible,
            "LogMeanMetric: z is singular (or not finite): its smallest singular value is "
            "below n * eps * its largest. The log-mean metric K(z) needs an invertible z, "
            "as every end-to-end map R(1) of a linear neural ODE is.",
        )
        return spectral_operator(p, log_mean_kernel(sigma), q)


@intrinsic_metric.register
def _(model: LinearNeuralODE, *, rtol: float | None = None) -> LogMeanMetric:
    H = model.conservation_laws()
    if isinstance(H, jax.core.Tracer):
        # LogMeanMetric has no fields, so a traced check would have nothing to ride on
        # (an unused eqx.error_if is dropped by jit): refuse rather than skip it.
        raise TypeError(
            "intrinsic_metric(LinearNeuralODE) checks the balance of the init, which needs "
            "concrete values: call it outside jit/vmap, or build manifolds.LogMeanMetric() "
            "directly (it has no fields) if the init is known to be relaxed balanced."
        )
    # K(φ(A)) − M(A) is second order in the balance residual (measured: the Galerkin
    # truncation cancels to first order), so √(√ε) here means K ≈ M to about √ε.
    # Any rtol above epsilon: a coarse projection may be accepted on purpose (rtol > 1).
    if rtol is None:
        rtol = float(np.sqrt(default_rtol(H.dtype)))
    else:
        rtol = metric_rtol(rtol, H.dtype, np.inf)
    residual = model.balance_residual()
    grid = jnp.asarray(model.s_grid, H.dtype)
    # The scale of H = dA/ds + dA/dsᵀ + AᵀA − AAᵀ: relative at every size of A (jit-safe).
    size = jnp.max(jnp.sum(jax.vmap(model.A)(grid) ** 2, axis=(1, 2)))
    scale = jnp.maximum(size, jnp.max(jnp.linalg.norm(H, axis=(1, 2))))
    check_domain(
        residual,
        residual > rtol * scale,
        "The log-mean intrinsic metric of LinearNeuralODE needs a relaxed-balanced init, "
        "H(s) = dA/ds + dA^T/ds + A^T A - A A^T = lam(s) I, to `rtol` relative to "
        "max_s max(||A(s)||_F^2, ||H(s)||_F) on the model's s_grid. Start from "
        "LinearNeuralODE.relaxed_balanced with a larger `degree` (its projection residual "
        "shrinks geometrically), or pass a larger `rtol`.",
        lambda: (
            f"Measured max_s ||H(s) - tr(H(s))/n I||_F = {float(residual):.3e}, above "
            f"{rtol:.1e} * {float(scale):.3g}."
        ),
    )
    return LogMeanMetric()
