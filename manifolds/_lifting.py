"""Split a factorization into its parameters θ and pure functions of θ (φ, h)."""

from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, PyTree

from models import AbstractFactorization


class _Rebuild(eqx.Module):
    # The model's non-parameter skeleton; calling rebuilds the model from θ and applies
    # one of its methods. A Module (not a closure) so that two liftings of same-shaped
    # models compare equal and `filter_jit` caches across them.
    skeleton: AbstractFactorization
    method: str = eqx.field(static=True)

    def __call__(self, theta: PyTree[Array]) -> PyTree[Array]:
        return getattr(eqx.combine(theta, self.skeleton), self.method)()


def _split(model, method):
    if not isinstance(model, AbstractFactorization):
        raise TypeError(
            f"`model` must be a models.AbstractFactorization, got {type(model).__name__}."
        )
    theta, skeleton = eqx.partition(model, eqx.is_inexact_array)
    return _Rebuild(skeleton, method), theta


def lifting_function(
    model: AbstractFactorization,
) -> tuple[Callable[[PyTree[Array]], PyTree[Array]], PyTree[Array]]:
    r"""Return `(phi, theta)` with `phi(theta) == model.lift()`.

    `theta` is the PyTree of the model's floating-point array leaves (the parameters
    $\theta \in \mathbb{R}^D$, with `None` elsewhere) and `phi` rebuilds the model from them,
    so `jax.jvp(phi, (theta,), (v,))` is $\partial\varphi(\theta)v$.
    """
    return _split(model, "lift")


def laws_function(
    model: AbstractFactorization,
) -> tuple[Callable[[PyTree[Array]], PyTree[Array]], PyTree[Array]]:
    r"""Return `(h, theta)` with `h(theta) == model.conservation_laws()`."""
    return _split(model, "conservation_laws")
