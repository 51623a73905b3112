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


def chain_squared_singular_values(
    key, widths: tuple[int, ...], lams: tuple[float, ...], scale: float
) -> list[np.ndarray]:
    """Squared singular values $a_j$ (length $\\min(n_{j-1}, n_j)$) of each layer.

    Raises `ValueError` when no relaxed-balanced chain with these widths and `lams` exists.
    """
    num_layers = len(widths) - 1
    lams = np.asarray(lams, dtype=np.float64)
    levels = np.concatenate([[0.0], np.cumsum(lams)])  # Λ_0..Λ_{L-1}
    draws = np.asarray(
        jax.random.uniform(key, (max(widths),), minval=0.5, maxval=2.0)
    ) * float(scale) ** 2
    tol = 1e-12 * max(1.0, float(np.max(np.abs(levels))))
    a = [np.zeros(min(widths[j], widths[j + 1])) for j in range(num_layers)]
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
            if any(active):
                if pinned:
                    base = -offsets[pinned[0]]
                    for j in pinned[1:]:
                        if abs(offsets[j] + base) > tol:
                            raise _infeasible(widths, lams, i, j, pinned[0])
                else:
                    base = max(0.0, max(-offsets[j] for j in comp)) + draws[i]
                for j, act in zip(comp, active):
                    value = base + offsets[j]
                    if value < -tol:
                        raise _infeasible(widths, lams, i, j, pinned[0], value)
                    if act:
                        a[j][i] = max(value, 0.0)
            start = end + 1
    return a


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
    akey, *okeys = jax.random.split(key, len(widths) + 1)
    a = chain_squared_singular_values(akey, widths, lams, scale)
    bases = [_haar_orthogonal(k, n, dtype) for k, n in zip(okeys, widths)]
    weights = []
    for j in range(len(widths) - 1):
        k = a[j].shape[0]
        d = jnp.sqrt(jnp.asarray(a[j], dtype=dtype))
        weights.append((bases[j + 1][:, :k] * d[None, :]) @ bases[j][:, :k].T)
    return weights
