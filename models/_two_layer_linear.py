"""Two-layer linear networks: Z = U Vᵀ."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._balance import relaxed_balanced_chain
from ._checks import (
    as_float_array,
    check_finite,
    check_key,
    check_positive_int,
    check_scalar,
    check_scale,
    check_value,
)
from ._custom_types import Key, RealScalarLike
from ._factorization import AbstractFactorization


class TwoLayerLinear(AbstractFactorization):
    r"""Two-layer linear network $Z = UV^\top$, $U \in \mathbb{R}^{n\times r}$,
    $V \in \mathbb{R}^{m\times r}$.

    $D = (n+m)r$ parameters, $d = nm$. The induced metric is
    $M(\theta)[X] = UU^\top X + XVV^\top$ and the conservation laws are the $r(r+1)/2$
    entries of the symmetric matrix $U^\top U - V^\top V$.
    """

    U: Float[Array, "n r"]
    V: Float[Array, "m r"]

    def __init__(self, U, V):
        r"""**Arguments:**

        - `U`: the second-layer weights, shape `(n, r)`.
        - `V`: the transposed first-layer weights, shape `(m, r)`.

        **Raises:** `ValueError` if either is not a matrix, their numbers of columns
        differ, or an entry is not finite; `TypeError` for non-float input.
        """
        U = as_float_array(U, "U")
        V = as_float_array(V, "V")
        for name, x in (("U", U), ("V", V)):
            if x.ndim != 2:
                raise ValueError(f"`{name}` must be a matrix (2 dimensions), got shape {x.shape}.")
        if U.shape[1] != V.shape[1]:
            raise ValueError(
                f"`U` and `V` must have the same number of columns r: got U of shape "
                f"{U.shape} and V of shape {V.shape}; expected (n, r) and (m, r)."
            )
        U = check_finite(U, "U")
        V = check_finite(V, "V")
        dtype = jnp.result_type(U, V)
        self.U = U.astype(dtype)
        self.V = V.astype(dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        """$(n, r, m)$."""
        return self.U.shape[0], self.U.shape[1], self.V.shape[0]

    def lift(self) -> Float[Array, "n m"]:
        return self.U @ self.V.T

    def conservation_laws(self) -> Float[Array, "r r"]:
        return self.U.T @ self.U - self.V.T @ self.V

    @classmethod
    def random(cls, key: Key, n: int, r: int, m: int, *, scale=1.0) -> "TwoLayerLinear":
        r"""Gaussian weights, entries of standard deviation `scale`$/\sqrt{r}$ for $U$ and
        `scale`$/\sqrt{m}$ for $V$ (fan-in scaling)."""
        n, r, m = (check_positive_int(x, k) for x, k in ((n, "n"), (r, "r"), (m, "m")))
        scale = check_scale(scale)
        ku, kv = jax.random.split(check_key(key))
        return cls(
            scale * jax.random.normal(ku, (n, r)) / jnp.sqrt(r),
            scale * jax.random.normal(kv, (m, r)) / jnp.sqrt(m),
        )

    @classmethod
    def balanced(
        cls, key: Key, n: int, r: int, m: int, *, scale: RealScalarLike = 1.0
    ) -> "TwoLayerLinear":
        r"""A generic init with $U^\top U = V^\top V$ (see `relaxed_balanced` with $\lambda=0$)."""
        return cls.relaxed_balanced(key, n, r, m, 0.0, scale=scale)

    @classmethod
    def relaxed_balanced(
        cls,
        key: Key,
        n: int,
        r: int,
        m: int,
        lam: RealScalarLike,
        *,
        scale: RealScalarLike = 1.0,
    ) -> "TwoLayerLinear":
        r"""A generic init with $U^\top U - V^\top V = \lambda I_r$ exactly (to rounding).

        **Arguments:** `key`; the sizes `n`, `r`, `m`; `lam` $=\lambda$; `scale`, the typical
        singular value of the free layer.

        Such an init exists iff $\lambda = 0$ (then $\mathrm{rank}\,U = \mathrm{rank}\,V
        \le \min(n, m, r)$), or $\lambda > 0$ and $r \le n$ ($U^\top U \succ 0$), or
        $\lambda < 0$ and $r \le m$ ($V^\top V \succ 0$).

        `lam` and `scale` may be traced (`jit`, `vmap`, `grad` in them); the sizes are static.

        **Raises:** `ValueError` where it does not exist, saying why; for a traced `lam`,
        an `equinox.EquinoxRuntimeError` with the same explanation when it runs.
        """
        n, r, m = (check_positive_int(x, k) for x, k in ((n, "n"), (r, "r"), (m, "m")))
        dtype = jnp.result_type(float)
        lam = check_scalar(lam, "lam", dtype)
        # Which sign of lam is impossible is decided by the sizes (static); whether lam has
        # that sign is a value, checked at once when concrete and by `eqx.error_if` when
        # traced (then `lam` is reported as traced).
        if r > n:
            lam = check_value(
                lam,
                lambda v: v > 0,
                lambda v: (
                    f"No init with U^T U - V^T V = lam I exists for lam={v} > 0 and "
                    f"r={r} > n={n}: U^T U = V^T V + lam I would be positive definite of "
                    f"rank r, but U has only n={n} rows."
                ),
            )
        if r > m:
            lam = check_value(
                lam,
                lambda v: v < 0,
                lambda v: (
                    f"No init with U^T U - V^T V = lam I exists for lam={v} < 0 and "
                    f"r={r} > m={m}: V^T V = U^T U - lam I would be positive definite of "
                    f"rank r, but V has only m={m} rows."
                ),
            )
        # The chain W_2 W_1 with W_1 = V^T (r x m) and W_2 = U (n x r).
        scale = check_scale(scale)
        w1, w2 = relaxed_balanced_chain(check_key(key), (m, r, n), lam[None], scale, dtype)
        return cls(w2, w1.T)
