r"""The scalar chain $z = u_1\cdots u_L$ with $u_{j+1}^2 - u_j^2 = \lambda_j$.

With $\Lambda_0 = 0$, $\Lambda_k = \lambda_1 + \dots + \lambda_k$ and $x = u_1^2$, every
$u_k^2 = x + \Lambda_{k-1} =: f_k(x)$ and $z^2 = p(x) = \prod_{k=1}^L f_k(x)$. On
$x \ge x_{\min} = \max(0, -\Lambda_1, \dots, -\Lambda_{L-1})$ all $f_k \ge 0$, so $p$ is
increasing and convex there: Newton's method started above the root decreases monotonically
to it. Starting point: $p(x) \ge (x - x_{\min})^L$, so $x_0 = x_{\min} + |z|^{2/L}$ is above.
"""

import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Float


def _factors(x, levels):
    # levels: Λ_0..Λ_{L-1}, (L,) or one set per entry of x, (L, *x.shape). Returns (L, ...).
    if levels.ndim == 1:
        levels = levels.reshape((-1,) + (1,) * x.ndim)
    return x[None] + levels


def prefix_suffix(x, levels):
    r"""$\big(\prod_{k<j} f_k(x)\big)_j$ and $\big(\prod_{k>j} f_k(x)\big)_j$, $j = 1..L$."""
    f = _factors(x, levels)
    ones = jnp.ones_like(f[:1])
    prefix = jnp.cumprod(jnp.concatenate([ones, f[:-1]]), axis=0)
    suffix = jnp.cumprod(jnp.concatenate([ones, f[::-1][:-1]]), axis=0)[::-1]
    return prefix, suffix


def chain_root(
    s: Float[Array, "*shape"], levels: Float[Array, " L *#shape"], max_steps: int = 256
) -> Float[Array, "*shape"]:
    r"""The root $x \ge x_{\min}$ of $p(x) = s$ for $s \ge 0$ (elementwise).

    `levels` are $\Lambda_0 = 0, \Lambda_1, \dots, \Lambda_{L-1}$ on the leading axis,
    shared by every entry of `s` (shape `(L,)`) or one set per entry (shape `(L, *shape)`).

    Newton's method (`optimistix.Newton`) in the scaled unknown $u = x/x_0$ from $u = 1$:
    $p$ is increasing and convex on $[x_{\min}, \infty)$, so the iterates decrease
    monotonically to the root (clipped at $x_{\min}$ against rounding) and converge
    quadratically away from double roots. The residual is divided by $x_0\,p'(x_0) \ge
    p(x_0) \ge s$, so that the stopping test (steps and residual below a few $\varepsilon$)
    is relative to $x$ at every scale, small initializations included. Derivatives with
    respect to `s` and `levels` come from the implicit function theorem
    (`optimistix.ImplicitAdjoint`): $\partial x = (\partial s - \partial_\Lambda p)/p'(x)$.

    **Raises:** an `EqxRuntimeError` (also under `jax.jit`) when Newton has not converged
    within `max_steps` iterations.
    """
    s = jnp.asarray(s)
    levels = jnp.asarray(levels)
    if levels.ndim == 1:
        levels = levels.reshape(levels.shape + (1,) * s.ndim)
    x_min = jnp.maximum(0.0, jnp.max(-levels, axis=0))
    x0 = x_min + s ** (1.0 / levels.shape[0])
    # x0 = 0 only when s = 0 and x_min = 0: the root is x = 0 itself, and p'(0) may vanish.
    trivial = x0 == 0
    x0 = jnp.where(trivial, 1.0, x0)
    eps = jnp.finfo(s.dtype).eps

    def p_and_dp(x, levels):
        prefix, suffix = prefix_suffix(x, levels)
        return prefix[-1] * (x + levels[-1]), jnp.sum(prefix * suffix, axis=0)

    def residual(u, args):
        s, levels, x0, trivial = args
        p, _ = p_and_dp(x0 * u, levels)
        _, dp0 = p_and_dp(x0, levels)
        return jnp.where(trivial, u, (p - s) / jnp.where(trivial, 1.0, x0 * dp0))

    u0 = jnp.where(trivial, 0.0, jnp.ones_like(x0))
    solution = optx.root_find(
        residual,
        optx.Newton(rtol=8 * eps, atol=8 * eps),
        u0,
        args=(s, jnp.broadcast_to(levels, levels.shape[:1] + s.shape), x0, trivial),
        options=dict(lower=jnp.where(trivial, 0.0, x_min / x0)),
        max_steps=max_steps,
        adjoint=optx.ImplicitAdjoint(),
        tags=frozenset({lx.diagonal_tag}),
    )
    return jnp.where(trivial, 0.0, x0 * solution.value)
