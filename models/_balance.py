r"""Exact relaxed-balanced initializations of linear chains.

A chain $W_L\cdots W_1$ with $W_j \in \mathbb{R}^{n_j\times n_{j-1}}$ is *relaxed balanced* when
$W_{j+1}^\top W_{j+1} - W_jW_j^\top = \lambda_j I_{n_j}$ for every hidden layer $j$. Both sides
commute, so the right singular vectors of $W_{j+1}$ are left singular vectors of $W_j$:
every such chain is $W_j = U_j D_j U_{j-1}^\top$ with orthogonal $U_j$ and rectangular diagonal
$D_j$. Along singular direction $i$ the squared singular values $a_{j,i}$ then obey the
scalar chain $a_{j+1,i} = a_{j,i} + \lambda_j$ (for $i < n_j$), with $a_{j,i} = 0$ forced when
$i \ge \min(n_{j-1}, n_j)$. Existence is decided direction by direction, exactly; a generic
member is drawn by picking the free values at random and the $U_j$ from the Haar measure.

Which directions are linked and which are pinned to zero depends on the widths only
(`chain_structure`, NumPy, cached); the values $\lambda_j$ and the scale only flow through
that structure as arrays, so the construction runs under `jit`, `vmap` and `grad` in them.
"""

import functools as ft
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class ChainStructure(NamedTuple):
    """Static description of the relaxed-balanced chains with given widths.

    With the levels $\\Lambda = (0, \\lambda_1, \\lambda_1 + \\lambda_2, \\dots)$, the squared
    singular value of layer `layer[k]` in direction `direction[k]` (one entry `k` per
    layer and direction, layer-major) is `base + Λ[layer] − Λ[start]` plus the free draw
    when `free[k]`. The component of layers `start[k]..` linked in that direction is pinned
    at layer `pin[k]` (`base` $= \\Lambda_{start} - \\Lambda_{pin}$, no draw) or free
    (`base` the least value keeping the component non-negative, `in_comp[k]` its layers).
    Each check `c` asks that `Λ[check_layer] − Λ[check_pin]` be zero (`check_kind` 0, a
    second pinned layer) or non-negative (kind 1), in the order the checks are reported.
    """

    sizes: tuple[int, ...]
    layer: np.ndarray
    start: np.ndarray
    pin: np.ndarray
    free: np.ndarray
    in_comp: np.ndarray
    check_kind: np.ndarray
    check_layer: np.ndarray
    check_pin: np.ndarray
    check_start: np.ndarray
    check_direction: np.ndarray


@ft.lru_cache(maxsize=256)
def chain_structure(widths: tuple[int, ...]) -> ChainStructure:
    """The structure of the relaxed-balanced chains with these widths (see `ChainStructure`).

    Depends on the widths only, never on $\\lambda$: which directions are free or pinned is
    a static decision, so that the values can be traced.
    """
    num_layers = len(widths) - 1
    sizes = tuple(min(widths[j], widths[j + 1]) for j in range(num_layers))
    entries = {}  # (layer, direction) -> (start, pin or -1, component layers)
    checks = []  # (kind, layer, pin, start, direction), in reporting order
    for i in range(max(widths)):
        # Layers 1..L are indexed 0..L-1 here; link j -> j+1 when i < n_{j+1}.
        start = 0
        while start < num_layers:
            end = start
            while end + 1 < num_layers and i < widths[end + 1]:
                end += 1
            comp = range(start, end + 1)
            pinned = [j for j in comp if i >= sizes[j]]
            pin = pinned[0] if pinned else -1
            if pinned:
                checks += [(0, j, pin, start, i) for j in pinned[1:]]
                checks += [(1, j, pin, start, i) for j in comp if i < sizes[j]]
            for j in comp:
                if i < sizes[j]:
                    entries[j, i] = (start, pin, tuple(comp))
            start = end + 1
    order = [(j, i) for j in range(num_layers) for i in range(sizes[j])]
    in_comp = np.zeros((len(order), num_layers), dtype=bool)
    for k, key in enumerate(order):
        in_comp[k, list(entries[key][2])] = True
    check = np.array(checks, dtype=np.int64).reshape(-1, 5)
    return ChainStructure(
        sizes=sizes,
        layer=np.array([j for j, _ in order], dtype=np.int64),
        start=np.array([entries[key][0] for key in order], dtype=np.int64),
        pin=np.array([entries[key][1] for key in order], dtype=np.int64),
        free=np.array([entries[key][1] < 0 for key in order], dtype=bool),
        in_comp=in_comp,
        check_kind=check[:, 0],
        check_layer=check[:, 1],
        check_pin=check[:, 2],
        check_start=check[:, 3],
        check_direction=check[:, 4],
    )


def chain_squared_singular_values(
    widths: tuple[int, ...], lams: jax.Array
) -> tuple[list[jax.Array], list[np.ndarray]]:
    """Squared singular values of each layer as `const[j] + free[j] * x`, per direction.

    `lams` is an array of the $L-1$ values $\\lambda_j$ (concrete or traced); `x` is the
    free positive draw of each singular direction (a direction pinned by a layer without a
    singular value there has `free = 0`; `free` is static, `const` follows `lams`).

    **Raises:** `ValueError` when no relaxed-balanced chain with these widths and concrete
    `lams` exists; for traced `lams` the returned values raise an
    `equinox.EquinoxRuntimeError` with the same explanation when the computation runs.
    """
    s = chain_structure(widths)
    # Concrete lams are decided now (a ValueError at trace time, also under `jit`).
    with jax.ensure_compile_time_eval():
        levels = jnp.concatenate([jnp.zeros((1,), lams.dtype), jnp.cumsum(lams)])
        offsets = levels[s.layer] - levels[s.start]
        pinned_base = -(levels[s.pin] - levels[s.start])
        # The least base keeping the whole free component non-negative.
        neg = -(levels[None, :] - levels[s.start][:, None])
        free_base = jnp.maximum(0.0, jnp.max(jnp.where(s.in_comp, neg, -jnp.inf), axis=1))
        value = jnp.where(s.free, free_base, pinned_base) + offsets
        value = _check_feasible(value, widths, lams, levels, s)
        const = jnp.maximum(value, 0.0)
    bounds = np.cumsum((0,) + s.sizes)
    consts = [const[bounds[j] : bounds[j + 1]] for j in range(len(s.sizes))]
    frees = [s.free[bounds[j] : bounds[j + 1]].astype(np.float64) for j in range(len(s.sizes))]
    return consts, frees


def _check_feasible(value, widths, lams, levels, s: ChainStructure):
    if s.check_kind.size == 0:
        return value
    v = -(levels[s.check_pin] - levels[s.check_start]) + (
        levels[s.check_layer] - levels[s.check_start]
    )
    dtype = levels.dtype
    tol = max(1e-12, 100 * float(jnp.finfo(dtype).eps)) * jnp.maximum(1.0, jnp.max(jnp.abs(levels)))
    bad = jnp.where(s.check_kind == 0, jnp.abs(v) > tol, v < -tol)
    if isinstance(bad, jax.core.Tracer):
        msgs = [
            _infeasible(widths, None, int(i), int(j), int(p), None if kind == 0 else "traced")
            for kind, j, p, i in zip(s.check_kind, s.check_layer, s.check_pin, s.check_direction)
        ]
        return eqx.branched_error_if(value, jnp.any(bad), jnp.argmax(bad), msgs)
    bad = np.asarray(bad)
    if bad.any():
        c = int(np.argmax(bad))
        raise _infeasible(
            widths,
            np.asarray(lams, dtype=np.float64),
            int(s.check_direction[c]),
            int(s.check_layer[c]),
            int(s.check_pin[c]),
            None if s.check_kind[c] == 0 else float(v[c]),
        )
    return value


def _infeasible(widths, lams, i, j, pinned, value=None):
    """The explanation, a `ValueError` for concrete `lams`, a message for traced ones."""
    why = (
        f"layer {pinned + 1} (shape {widths[pinned + 1]}x{widths[pinned]}) has no "
        f"singular value in direction {i}, which forces "
    )
    if value is None:
        why += f"layer {j + 1} to have none there too, inconsistent with `lams`"
    elif lams is None:
        why += f"a negative squared singular value in layer {j + 1}"
    else:
        why += f"a negative squared singular value {value:.3g} in layer {j + 1}"
    where = "the traced `lams`" if lams is None else f"lams={tuple(lams.tolist())}"
    msg = (
        "No relaxed-balanced initialization (W_{j+1}^T W_{j+1} - W_j W_j^T = "
        f"lam_j I) exists for widths={tuple(widths)} and {where}: "
        f"{why}. A positive lam_j needs n_{{j+1}} >= n_j, a negative one n_{{j-1}} >= "
        "n_j (the Gram matrix on the other side is then positive definite)."
    )
    return msg if lams is None else ValueError(msg)


def _haar_orthogonal(key, n: int, dtype) -> jax.Array:
    g = jax.random.normal(key, (n, n), dtype=dtype)
    q, r = jnp.linalg.qr(g)
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def relaxed_balanced_chain(key, widths: tuple[int, ...], lams, scale, dtype) -> list[jax.Array]:
    """Weights $W_1, \\dots, W_L$ of a generic relaxed-balanced chain (see module doc).

    `lams`: the $L-1$ values $\\lambda_j$ as an array (or sequence of scalars); `lams` and
    `scale` may be traced.
    """
    lams = jnp.asarray(lams, dtype).reshape(len(widths) - 2)
    const, free = chain_squared_singular_values(widths, lams)
    akey, *okeys = jax.random.split(key, len(widths) + 1)
    draws = jax.random.uniform(akey, (max(widths),), dtype, minval=0.5, maxval=2.0) * scale**2
    bases = [_haar_orthogonal(k, n, dtype) for k, n in zip(okeys, widths)]
    weights = []
    for j in range(len(widths) - 1):
        k = const[j].shape[0]
        d = jnp.sqrt(const[j].astype(dtype) + jnp.asarray(free[j], dtype) * draws[:k])
        weights.append((bases[j + 1][:, :k] * d[None, :]) @ bases[j][:, :k].T)
    return weights
