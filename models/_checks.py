"""Construction-time validation shared by the factorizations (tier (a) errors)."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def as_float_array(x, name: str) -> jax.Array:
    """Convert `x` to a floating JAX array, or raise a `TypeError` naming `name`."""
    if isinstance(x, jax.core.Tracer):
        arr = x
    else:
        try:
            arr = jnp.asarray(x)
        except TypeError as e:
            raise TypeError(f"`{name}` must be an array of floats, got {type(x).__name__}.") from e
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise TypeError(f"`{name}` must be a real floating array, got dtype {arr.dtype}.")
    return arr


def check_finite(x: jax.Array, name: str) -> jax.Array:
    """Check that `x` has no NaN or inf entries; return the array to store.

    A concrete array is checked at once: a `ValueError` naming `name`, the first bad
    entry and its index. A traced array (under `jit`/`vmap`) cannot be inspected, so the
    check is put into the data flow with `eqx.error_if`: the returned array raises an
    `equinox.EquinoxRuntimeError` naming `name` when the computation runs. **Store the
    returned array** (for a concrete one it is `x` itself), or the traced check is lost.
    """
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(
            x, ~jnp.all(jnp.isfinite(x)), f"`{name}` must have finite entries (got NaN or inf)."
        )
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` must have finite entries; got {np.asarray(x)[idx]} at index "
            f"{idx} ({int(bad.sum())} non-finite entries in an array of shape "
            f"{tuple(x.shape)})."
        )
    return x


def check_scalar(x, name: str, dtype) -> jax.Array:
    """`x` as a 0-dimensional array of `dtype` (concrete or traced), or a `ValueError`."""
    if isinstance(x, (list, tuple)) or jnp.ndim(x) != 0:
        raise ValueError(f"`{name}` must be a scalar, got {x!r}.")
    return jnp.asarray(as_float_array(x, name), dtype)


def check_value(
    x: jax.Array, bad: Callable[[jax.Array], jax.Array], message: Callable[[str], str]
) -> jax.Array:
    """Refuse a value of `x` for which `bad(x)` is true; return the `x` to use.

    A concrete `x` is checked at once, also inside `jit` (a closed-over constant): a
    `ValueError` with `message(str(x))`. A traced one cannot be inspected, so the check
    goes into the data flow with `eqx.error_if` and the message says "(traced)" for the
    value: **use the returned array**, or the traced check is lost.
    """
    with jax.ensure_compile_time_eval():
        pred = bad(x)
    if isinstance(pred, jax.core.Tracer):
        return eqx.error_if(x, pred, message("(traced)"))
    if np.any(np.asarray(pred)):
        raise ValueError(message(str(np.asarray(x).tolist())))
    return x


def check_sequence(xs, name: str, min_len: int) -> tuple:
    """Return `xs` as a tuple, checking it is a sequence of at least `min_len` items."""
    if isinstance(xs, (jax.Array, np.ndarray)) or not isinstance(xs, Sequence):
        raise TypeError(f"`{name}` must be a list or tuple of arrays, got {type(xs).__name__}.")
    if len(xs) < min_len:
        raise ValueError(f"`{name}` needs at least {min_len} factors, got {len(xs)}.")
    return tuple(xs)


def check_widths(widths, name: str = "widths", min_len: int = 2) -> tuple[int, ...]:
    """Validate a sequence of positive integer widths."""
    widths = tuple(widths)
    if len(widths) < min_len:
        raise ValueError(
            f"`{name}` must list at least {min_len} widths (input, ..., output), got {widths}."
        )
    for w in widths:
        if isinstance(w, bool) or int(w) != w or int(w) < 1:
            raise ValueError(f"`{name}` must contain positive integers, got {widths}.")
    return tuple(int(w) for w in widths)


def check_positive_int(x, name: str) -> int:
    if isinstance(x, bool) or int(x) != x or int(x) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {x!r}.")
    return int(x)


def broadcast_lams(lams, count: int, name: str = "lams") -> tuple:
    """Turn a scalar or a sequence of `count` values into a tuple of `count` values."""
    # `jnp.ndim`, not NumPy's: `lams` may be a tracer, or a tuple holding tracers.
    if not isinstance(lams, (list, tuple)) and jnp.ndim(lams) == 0:
        return (lams,) * count
    lams = tuple(lams)
    if len(lams) != count:
        raise ValueError(
            f"`{name}` must be a scalar or have one value per hidden layer "
            f"({count}), got {len(lams)} values."
        )
    return lams
