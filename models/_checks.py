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


def as_float_tree(tree, name: str):
    """`tree` with its leaves as JAX arrays, or a `TypeError` naming `name` unless every
    leaf is a floating array (and there is at least one)."""
    try:
        tree = jax.tree.map(jnp.asarray, tree)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a (PyTree of) floating array(s), got {tree!r}."
        ) from None
    leaves = jax.tree.leaves(tree)
    if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
        raise TypeError(
            f"`{name}` must be a (PyTree of) floating array(s), got dtypes "
            f"{[str(x.dtype) for x in leaves]}."
        )
    return tree


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
            x,
            ~jnp.all(jnp.isfinite(x)),
            f"`{name}` must have finite entries (got non-finite values: NaN or inf).",
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
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
        raise TypeError(f"`{name}` must be a list or tuple of positive integers, got {widths!r}.")
    widths = tuple(widths)
    if len(widths) < min_len:
        raise ValueError(
            f"`{name}` must list at least {min_len} widths (input, ..., output), got {widths}."
        )
    for w in widths:
        if not _is_int(w) or int(w) < 1:
            raise ValueError(f"`{name}` must contain positive integers, got {widths}.")
    return tuple(int(w) for w in widths)


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """Validate an array shape: a tuple of non-negative integers."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"`{name}` must be a tuple of non-negative integers, got {shape!r}.")
    if not all(_is_int(s) and int(s) >= 0 for s in shape):
        raise ValueError(f"`{name}` must be a tuple of non-negative integers, got {shape!r}.")
    return tuple(int(s) for s in shape)


def _is_int(x) -> bool:
    # An integer-valued number (3, np.int64(3), 3.0, a concrete 0-d integer array); a
    # bool is an int to Python but never a size.
    if isinstance(x, bool | np.bool_ | str | bytes) or isinstance(x, jax.core.Tracer):
        return False
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return False
    if arr.shape != () or arr.dtype == np.bool_:
        return False
    if np.issubdtype(arr.dtype, np.integer):
        return True
    return bool(np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr) and arr == int(arr))


def check_positive_int(x, name: str) -> int:
    if not _is_int(x) or int(x) < 1:
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


def check_key(key, name: str = "key"):
    """Return `key` if it is a JAX PRNG key, else a `TypeError` naming `name`.

    Both kinds are accepted: typed keys (`jax.random.key(seed)`) and legacy raw keys
    (`jax.random.PRNGKey(seed)`, a `uint32` array of shape `(2,)`); traced keys too.
    """
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if isinstance(key, (jax.Array, np.ndarray)) and dtype is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
            return key
        if dtype == jnp.uint32 and shape == (2,):
            return key
        got = f"an array of shape {tuple(shape)} and dtype {dtype}"
    else:
        got = f"{key!r} of type {type(key).__name__}"
    raise TypeError(
        f"`{name}` must be a single JAX PRNG key (e.g. `jax.random.key(0)`), got {got}."
    )


def check_tolerance(x, name: str, dtype, upper: float = 1.0) -> float:
    r"""`x` as a Python float in $(\varepsilon, $ `upper`$)$, $\varepsilon$ of `dtype`.

    A tolerance at or below machine epsilon cannot be met (and a rank cut at it is
    noise); one at or above `upper` (1 for a relative tolerance) accepts anything.
    `TypeError` for a non-number, `ValueError` for a value outside the interval.
    """
    eps = float(jnp.finfo(dtype).eps)
    interval = f"(eps, {upper:g}) = ({eps:.3g}, {upper:g}) for {jnp.dtype(dtype).name}"
    if isinstance(x, jax.core.Tracer):
        raise TypeError(f"`{name}` must be a concrete number (not traced), got {x}.")
    if isinstance(x, (bool, np.bool_, str, bytes)) or not _is_real_scalar(x):
        raise TypeError(f"`{name}` must be a real number in {interval}, got {x!r}.")
    value = float(np.asarray(x))
    if not (np.isfinite(value) and eps < value < upper):
        raise ValueError(f"`{name}` must be positive and lie in {interval}, got {value!r}.")
    return value


def _is_real_scalar(x) -> bool:
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return False
    return arr.shape == () and (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    )


def check_scale(scale, name: str = "scale") -> jax.Array:
    """A finite real scalar (concrete or traced) in the default float dtype."""
    scale = check_scalar(scale, name, jnp.result_type(float))
    return check_value(
        scale,
        lambda v: ~jnp.isfinite(v),
        lambda v: f"`{name}` must be a finite number, got non-finite {v}.",
    )
