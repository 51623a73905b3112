"""Diagonal linear networks: z = u_1 ⊙ ⋯ ⊙ u_L."""

import functools as ft
import operator

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import (
    as_float_array,
    broadcast_lams,
    check_finite,
    check_key,
    check_positive_int,
    check_scale,
    check_sequence,
    check_shape,
)
from ._custom_types import Key
from ._factorization import AbstractFactorization


class DiagonalLinear(AbstractFactorization):
    r"""Diagonal linear network $z = u_1 \odot u_2 \odot \cdots \odot u_L$, $L \ge 2$.

    Covers the scalar $uv$ model (shape `()`, $L = 2$) and depth-$L$ chains on any shape.
    The conservation laws are $h_j = u_{j+1}^2 - u_j^2$ (entrywise), $j = 1..L-1$, and the
    induced metric is diagonal, $M = \mathrm{diag}\big(\sum_j \prod_{k\ne j} u_k^2\big)$.
    """

    factors: tuple[Array, ...]

    def __init__(self, factors):
        r"""**Arguments:**

        - `factors`: a list or tuple of $L \ge 2$ floating arrays of one common shape.

        **Raises:** `TypeError` for non-float or non-sequence input; `ValueError` for
        fewer than two factors, mismatched shapes or non-finite entries.
        """
        factors = check_sequence(factors, "factors", 2)
        arrays = tuple(as_float_array(u, f"factors[{j}]") for j, u in enumerate(factors))
        shape = arrays[0].shape
        for j, u in enumerate(arrays):
            if u.shape != shape:
                raise ValueError(
                    f"`factors` must all have the shape of factors[0], {shape}; "
                    f"factors[{j}] has shape {u.shape}."
                )
        arrays = tuple(check_finite(u, f"factors[{j}]") for j, u in enumerate(arrays))
        dtype = jnp.result_type(*arrays)
        self.factors = tuple(u.astype(dtype) for u in arrays)

    @property
    def depth(self) -> int:
        """The number of factors $L$."""
        return len(self.factors)

    def lift(self) -> Float[Array, "*shape"]:
        return ft.reduce(operator.mul, self.factors)

    def conservation_laws(self) -> Float[Array, " depth_minus_one *shape"]:
        r"""$h_j = u_{j+1}^2 - u_j^2$, stacked along a leading axis of length $L-1$."""
        sq = jnp.stack([u**2 for u in self.factors])
        return sq[1:] - sq[:-1]

    @classmethod
    def random(
        cls, key: Key, shape: tuple[int, ...] = (), depth: int = 2, *, scale=1.0
    ) -> "DiagonalLinear":
        r"""Independent Gaussian factors with standard deviation `scale`."""
        depth = check_positive_int(depth, "depth")
        if depth < 2:
            raise ValueError(f"`depth` must be at least 2, got {depth}.")
        scale = check_scale(scale)
        keys = jax.random.split(check_key(key), depth)
        shape = check_shape(shape)
        return cls([scale * jax.random.normal(k, shape) for k in keys])

    @classmethod
    def balanced(
        cls, key: Key, shape: tuple[int, ...] = (), depth: int = 2, *, scale=1.0
    ) -> "DiagonalLinear":
        r"""Factors with $u_1^2 = \dots = u_L^2$ (all laws zero) and random signs."""
        return cls.relaxed_balanced(key, shape, depth, 0.0, scale=scale)

    @classmethod
    def relaxed_balanced(
        cls, key: Key, shape: tuple[int, ...], depth: int, lams, *, scale=1.0
    ) -> "DiagonalLinear":
        r"""Factors with $u_{j+1}^2 - u_j^2 = \lambda_j$ exactly (up to rounding).

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `shape`: the common shape of the factors.
        - `depth`: $L \ge 2$.
        - `lams`: a scalar (the same $\lambda$ for every $j$) or $L-1$ values, each a
          scalar or an array broadcastable to `shape`.
        - `scale`: typical magnitude of $u_1^2$ above its lower bound.

        With $\Lambda_k = \lambda_1 + \dots + \lambda_k$, $u_1^2$ is drawn above
        $\max(0, -\Lambda_k)$ so that every $u_j^2 = u_1^2 + \Lambda_{j-1}$ is positive:
        every $\lambda$ is feasible, and `lams` and `scale` may be traced (`jit`, `vmap`,
        `grad` in them); `shape` and `depth` are static.
        """
        depth = check_positive_int(depth, "depth")
        if depth < 2:
            raise ValueError(f"`depth` must be at least 2, got {depth}.")
        shape = check_shape(shape)
        dtype = jnp.result_type(float)
        lams = broadcast_lams(lams, depth - 1)
        lam_arr = [
            jnp.broadcast_to(as_float_array(lam, "lams").astype(dtype), shape) for lam in lams
        ]
        levels = jnp.concatenate(
            [jnp.zeros((1, *shape), dtype), jnp.cumsum(jnp.stack(lam_arr), axis=0)]
        )
        scale = check_scale(scale)
        xkey, skey = jax.random.split(check_key(key))
        draw = jax.random.uniform(xkey, shape, dtype, minval=0.5, maxval=2.0)
        x = jnp.maximum(0.0, jnp.max(-levels, axis=0)) + scale**2 * draw
        signs = jax.random.rademacher(skey, (depth, *shape), dtype)
        return cls([signs[j] * jnp.sqrt(x + levels[j]) for j in range(depth)])
