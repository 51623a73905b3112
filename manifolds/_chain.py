r"""The scalar chain $z = u_1\cdots u_L$ with $u_{j+1}^2 - u_j^2 = \lambda_j$.

With $\Lambda_0 = 0$, $\Lambda_k = \lambda_1 + \dots + \lambda_k$ and $x = u_1^2$, every
$u_k^2 = x + \Lambda_{k-1} =: f_k(x)$ and $z^2 = p(x) = \prod_{k=1}^L f_k(x)$. On
$x \ge x_{\min} = \max(0, -\Lambda_1, \dots, -\Lambda_{L-1})$ all $f_k \ge 0$, so $p$ is
increasing and convex there: Newton's method started above the root decreases monotonically
to it. Starting point: $p(x) \ge (x - x_{\min})^L$, so $x_0 = x_{\min} + |z|^{2/L}$ is above.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _factors(x, levels):
    # levels: (L,) = Λ_0..Λ_{L-1}; x: (...). Returns (L, ...).
    return x[None] + levels.reshape((-1,) + (1,) * x.ndim)


def prefix_suffix(x, levels):
    r"""$\big(\prod_{k<j} f_k(x)\big)_j$ and $\big(\prod_{k>j} f_k(x)\big)_j$, $j = 1..L$."""
    f = _factors(x, levels)
    ones = jnp.ones_like(f[:1])
    prefix = jnp.cumprod(jnp.concatenate([ones, f[:-1]]), axis=0)
    suffix = jnp.cumprod(jnp.concatenate([ones, f[::-1][:-1]]), axis=0)[::-1]
    return prefix, suffix


def chain_root(s: Float[Array, "*shape"], levels: Float[Array, " L"], max_steps: int = 200):
    r"""The root $x \ge x_{\min}$ of $p(x) = s$ for $s \ge 0$ (elementwise)."""
    s = jnp.asarray(s)
    depth = levels.shape[0]
    x_min = jnp.maximum(0.0, jnp.max(-levels))
    x0 = x_min + s ** (1.0 / depth)
    eps = jnp.finfo(s.dtype).eps

    def newton(x):
        prefix, suffix = prefix_suffix(x, levels)
        p = prefix[-1] * (x + levels[-1])
        dp = jnp.sum(prefix * suffix, axis=0)
        step = jnp.where(dp > 0, (p - s) / jnp.where(dp > 0, dp, 1.0), 0.0)
        # Monotone from above: a non-positive step means convergence to rounding.
        return jnp.maximum(x - jnp.maximum(step, 0.0), x_min)

    def cond(carry):
        i, x, x_prev = carry
        moving = jnp.abs(x - x_prev) > 4 * eps * jnp.maximum(x, x_min + eps)
        return (i < max_steps) & jnp.any(moving)

    def body(carry):
        i, x, _ = carry
        return i + 1, newton(x), x

    _, x, _ = jax.lax.while_loop(cond, body, (0, newton(x0), x0))
    return x


def chain_metric_kernel(x_left, x_right, levels):
    r"""$\sum_j \prod_{k>j} f_k(x_i)\,\prod_{k<j} f_k(x'_l)$ as an outer array over $(i, l)$."""
    _, suffix = prefix_suffix(x_left, levels)
    prefix, _ = prefix_suffix(x_right, levels)
    return jnp.einsum("ji,jl->il", suffix, prefix)
