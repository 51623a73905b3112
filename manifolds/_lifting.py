"""Split a factorization into its parameters θ and the pure function θ ↦ φ(θ)."""

from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, PyTree

from models import AbstractFactorization


def lifting_function(
    model: AbstractFactorization,
) -> tuple[Callable[[PyTree[Array]], PyTree[Array]], PyTree[Array]]:
    r"""Return `(phi, theta)` with `phi(theta) == model.lift()`.

    `theta` is the PyTree of the model's floating-point array leaves (the parameters
    $\theta \in \mathbb{R}^D$, with `None` elsewhere) and `phi` rebuilds the model from them,
    so `jax.jvp(phi, (theta,), (v,))` is $\partial\varphi(\theta)v$.
    """
    if not isinstance(model, AbstractFactorization):
        raise TypeError(
            f"`model` must be a models.AbstractFactorization, got {type(model).__name__}."
        )
    theta, static = eqx.partition(model, eqx.is_inexact_array)

    def phi(p):
        return eqx.combine(p, static).lift()

    return phi, theta


def laws_function(model: AbstractFactorization):
    """Like [`manifolds.lifting_function`][] for $\\theta \\mapsto h(\\theta)$."""
    theta, static = eqx.partition(model, eqx.is_inexact_array)

    def h(p):
        return eqx.combine(p, static).conservation_laws()

    return h, theta
