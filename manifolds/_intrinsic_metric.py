"""Abstract intrinsic metric z ↦ K(z) and the `intrinsic_metric` dispatcher."""

import abc
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, PyTree

from models import AbstractFactorization
from models._checks import as_float_array, check_finite, check_tolerance


class AbstractIntrinsicMetric(eqx.Module):
    r"""A metric $z \mapsto K(z)$ such that $M(\theta) = K(\varphi(\theta))$ on a level set.

    Calling it on $z$ returns a symmetric positive semidefinite `lineax` operator on
    $z$-shaped arrays; the intrinsic flow is $z' = -K(z)\nabla f(z)$
    ([`flows.intrinsic_flow`][]). The level set's conserved values are fields of the module
    (leaves), so one metric is one level set.
    """

    @abc.abstractmethod
    def __call__(self, z: PyTree[Array]) -> lx.AbstractLinearOperator:
        """Return $K(z)$ as a linear operator on $z$-shaped arrays."""


def check_domain(x, bad, message: str, details=None):
    r"""Return `x`, raising when `bad` (a boolean scalar) holds: the closed form's domain check.

    Concrete `bad`: a `ValueError` at once, `message` followed by `details()` (the measured
    numbers). Traced `bad` (under `jit`/`vmap`): `eqx.error_if` on the returned `x` with
    `message`, so **store the returned array**.
    """
    if isinstance(bad, jax.core.Tracer):
        return eqx.error_if(x, bad, message)
    if bool(bad):
        raise ValueError(message + ("" if details is None else " " + details()))
    return x


def check_point(z, shape=None, name: str = "z"):
    r"""`z` as a floating array, of `shape` if given, with finite entries: the argument
    of a metric's `__call__`.

    **Raises:** `TypeError` for a non-numeric `z`; `ValueError` for another shape (the
    metric's level set fixes it), or non-finite entries when `z` is concrete; for a
    traced `z` the returned array raises an `equinox.EquinoxRuntimeError` saying
    non-finite when it runs, so **use the returned array**.
    """
    z = as_float_array(z, name)
    if shape is not None and tuple(z.shape) != tuple(shape):
        raise ValueError(
            f"`{name}` must have shape {tuple(shape)}, the shape of `model.lift()` for the "
            f"model this metric was built from; got shape {tuple(z.shape)}."
        )
    return check_finite(z, name)


def check_matrix_shape(shape, name: str = "shape") -> tuple[int, int]:
    """A pair of positive integers `(n, m)`, the shape of a matrix `z`."""
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in shape
        )
    ):
        raise ValueError(f"`{name}` must be a pair of positive integers (n, m), got {shape!r}.")
    return int(shape[0]), int(shape[1])


def metric_rtol(rtol, dtype, upper: float = 1.0) -> float:
    """The `rtol` of `intrinsic_metric`: default $\\sqrt{\\varepsilon}$, else checked."""
    return default_rtol(dtype) if rtol is None else check_tolerance(rtol, "rtol", dtype, upper)


def default_rtol(dtype) -> float:
    """$\\sqrt{\\varepsilon}$ of `dtype`: the balance residual accepted by default."""
    return float(np.sqrt(jnp.finfo(dtype).eps))


@ft.singledispatch
def intrinsic_metric(model: AbstractFactorization, *, rtol: float | None = None):
    r"""The closed-form intrinsic metric $K$ of the level set through `model`.

    For a factorization whose gradient flow is intrinsic, $M(\theta) = K(\varphi(\theta))$
    for every $\theta$ with the conserved values $h(\theta) = h(\theta_0)$ of `model`
    ($\theta_0$). The result is an [`manifolds.AbstractIntrinsicMetric`][]: call it on $z$
    to get $K(z)$.

    Supported (see each metric's page for the formula):

    - [`models.DiagonalLinear`][], any depth and conserved values:
      [`manifolds.DiagonalChainMetric`][].
    - [`models.TwoLayerLinear`][] with $U^\top U - V^\top V = \lambda I$:
      [`manifolds.TwoLayerLinearMetric`][].
    - [`models.DeepLinear`][], balanced (any widths) or relaxed balanced with square
      widths: [`manifolds.DeepLinearMetric`][].

    **Arguments:**

    - `model`: the factorization at $\theta_0$.
    - `rtol`: accepted relative residual of the balance condition; default
      $\sqrt{\varepsilon}$ of the model's dtype.

    **Raises:** `ValueError` when the initialization is outside the class that has a
    closed form (the message gives the measured residual and what is needed);
    `TypeError` for a factorization with no registered closed form. Register one for your
    own factorization with `@intrinsic_metric.register(MyFactorization)`.
    """
    raise TypeError(
        f"No closed-form intrinsic metric is registered for {type(model).__name__}. "
        "Register one with `@manifolds.intrinsic_metric.register(YourFactorization)`; "
        "closed forms exist for DiagonalLinear, TwoLayerLinear and DeepLinear."
    )
