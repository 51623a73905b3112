"""Deep linear networks: Z = W_L ⋯ W_1."""

import functools as ft

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._balance import relaxed_balanced_chain
from ._checks import (
    as_float_array,
    broadcast_lams,
    check_finite,
    check_key,
    check_positive_int,
    check_scalar,
    check_scale,
    check_sequence,
    check_widths,
)
from ._custom_types import Key, RealScalarLike
from ._factorization import AbstractFactorization
from ._linear_neural_ode import LinearNeuralODE


class DeepLinear(AbstractFactorization):
    r"""Deep linear network $Z = W_L \cdots W_1$, $W_j \in \mathbb{R}^{n_j\times n_{j-1}}$.

    The induced metric is
    $M(\theta)[X] = \sum_j (W_L\cdots W_{j+1})(W_L\cdots W_{j+1})^\top X
    (W_{j-1}\cdots W_1)^\top (W_{j-1}\cdots W_1)$, and there is one matrix conservation
    law per hidden layer, $h_j = W_{j+1}^\top W_{j+1} - W_jW_j^\top \in \mathrm{Sym}(n_j)$.
    """

    weights: tuple[Array, ...]

    def __init__(self, weights):
        r"""**Arguments:**

        - `weights`: a list or tuple $(W_1, \dots, W_L)$, $L \ge 2$, first layer first;
          $W_j$ has shape $(n_j, n_{j-1})$.

        **Raises:** `ValueError` for fewer than two layers, non-matrices, shapes that do
        not chain, or non-finite entries; `TypeError` for non-float input.
        """
        weights = check_sequence(weights, "weights", 2)
        ws = tuple(as_float_array(w, f"weights[{j}]") for j, w in enumerate(weights))
        for j, w in enumerate(ws):
            if w.ndim != 2:
                raise ValueError(f"`weights[{j}]` must be a matrix, got shape {w.shape}.")
        for j in range(1, len(ws)):
            if ws[j].shape[1] != ws[j - 1].shape[0]:
                raise ValueError(
                    f"`weights` do not chain: weights[{j}] has shape {ws[j].shape} but "
                    f"weights[{j - 1}] has shape {ws[j - 1].shape}; expected "
                    f"weights[{j}] of shape (n_{j + 1}, {ws[j - 1].shape[0]})."
                )
        ws = tuple(check_finite(w, f"weights[{j}]") for j, w in enumerate(ws))
        dtype = jnp.result_type(*ws)
        self.weights = tuple(w.astype(dtype) for w in ws)

    @property
    def widths(self) -> tuple[int, ...]:
        r"""$(n_0, n_1, \dots, n_L)$."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def depth(self) -> int:
        return len(self.weights)

    def lift(self) -> Float[Array, "n_out n_in"]:
        return ft.reduce(lambda acc, w: w @ acc, self.weights[1:], self.weights[0])

    def conservation_laws(self) -> tuple[Float[Array, "n n"], ...]:
        r"""$(h_1, \dots, h_{L-1})$, $h_j = W_{j+1}^\top W_{j+1} - W_jW_j^\top$."""
        ws = self.weights
        return tuple(ws[j + 1].T @ ws[j + 1] - ws[j] @ ws[j].T for j in range(len(ws) - 1))

    @classmethod
    def random(cls, key: Key, widths, *, scale=1.0) -> "DeepLinear":
        r"""Gaussian weights with fan-in scaling: entries of $W_j$ have standard deviation
        `scale`$/\sqrt{n_{j-1}}$."""
        widths = check_widths(widths, min_len=3)
        scale = check_scale(scale)
        keys = jax.random.split(check_key(key), len(widths) - 1)
        return cls(
            [
                scale * jax.random.normal(k, (widths[j + 1], widths[j])) / jnp.sqrt(widths[j])
                for j, k in enumerate(keys)
            ]
        )

    @classmethod
    def from_neural_ode(cls, model: LinearNeuralODE, depth: int) -> "DeepLinear":
        r"""The residual discretisation of a linear neural ODE: $W_k = I + A(s_k)/L$.

        With the midpoints $s_k = (k - \tfrac12)/L$, $k = 1, \dots, L$, the product
        $W_L\cdots W_1$ is the explicit Euler-type scheme for $R' = A(s)R$: it converges
        to $z = R(1)$ ([`models.LinearNeuralODE.lift`][]) with error $O(1/L)$ (first
        order: $I + hA$ matches $e^{hA}$ only to $O(h^2)$ per layer, whichever points
        $s_k$ are used). The laws match too: $h_k = W_{k+1}^\top W_{k+1} - W_kW_k^\top
        = H(k/L)/L^2 + O(L^{-3})$, so a relaxed-balanced ODE, $H(s) = \lambda(s)I$, gives a
        nearly relaxed-balanced deep net with $\lambda_k \approx \lambda(k/L)/L^2$.

        **Arguments:** `model`, a [`models.LinearNeuralODE`][]; `depth` $= L \ge 2$.

        **Raises:** `ValueError` for a depth below 2; `TypeError` for another model.
        """
        if not isinstance(model, LinearNeuralODE):
            raise TypeError(f"`model` must be a LinearNeuralODE, got {type(model).__name__}.")
        depth = check_positive_int(depth, "depth")
        if depth < 2:
            raise ValueError(f"`depth` must be at least 2 (a deep network), got {depth}.")
        s = (jnp.arange(depth, dtype=model.coeffs.dtype) + 0.5) / depth
        layers = jnp.eye(model.n, dtype=model.coeffs.dtype)[None] + jax.vmap(model.A)(s) / depth
        return cls(list(layers))

    @classmethod
    def balanced(cls, key: Key, widths, *, scale: RealScalarLike = 1.0) -> "DeepLinear":
        r"""A generic init with $W_{j+1}^\top W_{j+1} = W_jW_j^\top$ for every $j$."""
        return cls.relaxed_balanced(key, widths, 0.0, scale=scale)

    @classmethod
    def relaxed_balanced(
        cls, key: Key, widths, lams, *, scale: RealScalarLike = 1.0
    ) -> "DeepLinear":
        r"""A generic init with $W_{j+1}^\top W_{j+1} - W_jW_j^\top = \lambda_j I$ exactly.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `widths`: $(n_0, \dots, n_L)$, $L \ge 2$.
        - `lams`: one $\lambda_j$ per hidden layer ($L-1$ values) or a scalar for all.
        - `scale`: the typical singular value of the free layers.

        Every such init is $W_j = U_jD_jU_{j-1}^\top$ with orthogonal $U_j$, so existence is
        decided exactly, singular direction by singular direction (`models/_balance.py`).

        Which singular directions are free or pinned depends on the widths only (static);
        `lams` and `scale` may be traced (`jit`, `vmap`, `grad` in them).

        **Raises:** `ValueError` if no such init exists for these widths, saying which
        layer and direction make it impossible; for traced `lams`, an
        `equinox.EquinoxRuntimeError` with the same explanation when it runs.
        """
        widths = check_widths(widths, min_len=3)
        dtype = jnp.result_type(float)
        lams = broadcast_lams(lams, len(widths) - 2)
        lams = jnp.stack([check_scalar(x, f"lams[{j}]", dtype) for j, x in enumerate(lams)])
        scale = check_scale(scale)
        ws = relaxed_balanced_chain(check_key(key), widths, lams, scale, dtype)
        return cls(ws)
