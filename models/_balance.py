r"""Exact relaxed-balanced initializations of linear chains.

A chain $W_L\cdots W_1$ with $W_j \in \mathbb{R}^{n_j\times n_{j-1}}$ is *relaxed balanced* when
$W_{j+1}^\top W_{j+1} - W_jW_j^\top = \lambda_j I_{n_j}$ for every hidden layer $j$. Both sides
commute, so the right singular vectors of $W_{j+1}$ are left singular vectors of $W_j$:
every such chain is $W_j = U_j D_j U_{j-1}^\top$ with orthogonal $U_j$ and rectangular diagonal
$D_j$. Along singular direction $i$ the squared singular values $a_{j,i}$ then obey the
scalar chain $a_{j+1,i} = a_{j,i} + \lambda_j$ (for $i < n_j$), with $a_{j,i} = 0$ forced when
$i \ge \min(n_{j-1}, n_j)$. Existence is decided direction by direction, exactly; a generic
member is drawn by picking the free values at random and the $U_j$ from the Haar measure.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _haar_orthogonal(key, n: int, dtype) -> jax.Array:
    g = jax.random.normal(key, (n, n), dtype=dtype)
    q, r = jnp.linalg.qr(g)
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def chain_structure(
    widths: tuple[int, ...], lams: tuple[float, ...]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Squared singular values of each layer as `const[j] + free[j] * x`, per direction.

    `x` is the free positive draw of each singular direction (a direction pinned by a
    layer without a singular value there has `free = 0`). Depends only on static data, so
    the random part can be drawn under `jit`/`vmap`.

    Raises `ValueError` when no relaxed-balanced chain with these widths and `lams` exists.
    """
    num_layers = len(widths) - 1
    lams = np.asarray(lams, dtype=np.float64)
    levels = np.concatenate([[0.0], np.cumsum(lams)])  # Λ_0..Λ_{L-1}
    tol = 1e-12 * max(1.0, float(np.max(np.abs(levels))))
    const = [np.zeros(min(widths[j], widths[j + 1])) for j in range(num_layers)]
    free = [np.zeros(min(widths[j], widths[j + 1])) for j in range(num_layers)]
    for i in range(max(widths)):
        # Layers 1..L are indexed 0..L-1 here; link j -> j+1 when i < n_{j+1}.
        start = 0
        while start < num_layers:
            end = start
            while end + 1 < num_layers and i < widths[end + 1]:
                end += 1
            comp = range(start, end + 1)
            active = [i < min(widths[j], widths[j + 1]) for j in comp]
            offsets = {j: levels[j] - levels[start] for j in comp}
            pinned = [j for j, act in zip(comp, active) if not act]
            if pinned:
                base, is_free = -offsets[pinned[0]], 0.0
                for j in pinned[1:]:
                    if abs(offsets[j] + base) > tol:
                        raise _infeasible(widths, lams, i, j, pinned[0])
            else:
                base, is_free = max(0.0, max(-offsets[j] for j in comp)), 1.0
            for j, act in zip(comp, active):
                value = base + offsets[j]
                if value < -tol:
                    raise _infeasible(widths, lams, i, j, pinned[0], value)
                if act:
                    const[j][i] = max(value, 0.0)
                    free[j][i] = is_free
            start = end + 1
    return const, free


def _infeasible(widths, lams, i, j, pinned, value=None) -> ValueError:
    why = (
        f"layer {pinned + 1} (shape {widths[pinned + 1]}x{widths[pinned]}) has no "
        f"singular value in direction {i}, which forces "
    )
    if value is None:
        why += f"layer {j + 1} to have none there too, inconsistent with `lams`"
    else:
        why += f"a negative squared singular value {value:.3g} in layer {j + 1}"
    return ValueError(
        "No relaxed-balanced initialization (W_{j+1}^T W_{j+1} - W_j W_j^T = "
        f"lam_j I) exists for widths={tuple(widths)} and lams={tuple(lams.tolist())}: "
        f"{why}. A positive lam_j needs n_{{j+1}} >= n_j, a negative one n_{{j-1}} >= "
        "n_j (the Gram matrix on the other side is then positive definite)."
    )


def relaxed_balanced_chain(
    key, widths: tuple[int, ...], lams: tuple[float, ...], scale: float, dtype
) -> list[jax.Array]:
    """Weights $W_1, \\dots, W_L$ of a generic relaxed-balanced chain (see module doc)."""
    const, free = chain_structure(widths, lams)
    akey, *okeys = jax.random.split(key, len(widths) + 1)
    draws = jax.random.uniform(akey, (max(widths),), dtype, minval=0.5, maxval=2.0) * scale**2
    bases = [_haar_orthogonal(k, n, dtype) for k, n in zip(okeys, widths)]
    weights = []
    for j in range(len(widths) - 1):
        k = const[j].shape[0]
        d = jnp.sqrt(jnp.asarray(const[j], dtype) + jnp.asarray(free[j], dtype) * draws[:k])
        weights.append((bases[j + 1][:, :k] * d[None, :]) @ bases[j][:, :k].T)
    return weights
