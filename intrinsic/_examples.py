"""Built-in examples for the `intrinsic` command: a factorization, a loss and its metric.

Names, descriptions and defaults are in `_catalog` (plain data); this module builds them.
"""

import dataclasses
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

import manifolds
import models
from flows import OutputLoss

from ._catalog import CATALOG, DEFAULT_EXAMPLE as DEFAULT_EXAMPLE
from ._cli import _precision


@dataclasses.dataclass(frozen=True)
class Example:
    """A built-in experiment: `build(config)` returns `(model, loss, K)`;
    `build_random(config)` a generic (unbalanced) model of the same architecture.

    `build_model(config)` and `build_loss(config)` are its two halves. `values` names the
    parameters that the model's constructor takes as array values (traceable: `jit`,
    `vmap`, `grad`), so that `intrinsic sweep` builds all its members with one
    `jax.vmap`; every other parameter (a width, a depth, a flag, the seed behind the
    data) is static, and changing it builds a new model in Python.
    """

    name: str
    description: str
    defaults: dict
    build_model: Callable
    build_loss: Callable
    build_random: Callable
    values: frozenset[str] = frozenset()
    data: frozenset[str] = frozenset()
    polynomial: bool = True
    cast_model: Callable | None = None

    def build(self, config: dict, precision: int | None = None):
        """`(model, loss, K)`; with `precision` (32 or 64), drawn in float64 and cast, so
        that one seed gives the same problem at either precision."""
        if precision is None:
            model, loss = self.build_model(config), self.build_loss(config)
        else:
            with _precision(64):
                model, loss = self.build_model(config), self.build_loss(config)
                model, loss = jax.device_get((model, loss))  # NumPy float64 leaves
            dtype = jnp.float64 if precision == 64 else jnp.float32
            model = (self.cast_model or _cast)(model, dtype)
            loss = _cast(loss, dtype)
        return model, loss, manifolds.intrinsic_metric(model)


def _cast(tree, dtype):
    def cast(x):
        if not eqx.is_array(x):
            return x
        return jnp.asarray(x, dtype if jnp.issubdtype(x.dtype, jnp.floating) else None)

    return jax.tree.map(cast, tree)


class _Regression(eqx.Module):
    r"""$f(Z) = \frac{1}{2N}\|ZX - Y\|_F^2$: the data are array fields (a new dataset of the
    same shapes is a new value, and recompiles nothing; casting it casts the data)."""

    X: jax.Array
    Y: jax.Array

    def __call__(self, z, args=None):
        return 0.5 * jnp.mean(jnp.sum((z @ self.X - self.Y) ** 2, axis=0))


class _VectorRegression(eqx.Module):
    r"""$f(z) = \frac{1}{2N}\|Xz - y\|^2$."""

    X: jax.Array
    y: jax.Array

    def __call__(self, z, args=None):
        return 0.5 * jnp.mean((self.X @ z - self.y) ** 2)


def _regression(key, n_out, n_in, rank, num_samples=20):
    r"""$f(Z) = \frac{1}{2N}\|ZX - Y\|_F^2$ with $Y = Z_\star X$, $Z_\star$ of rank `rank`."""
    ka, kb, kx = jax.random.split(key, 3)
    target = jax.random.normal(ka, (n_out, rank)) @ jax.random.normal(kb, (rank, n_in))
    target = target / jnp.sqrt(rank)
    X = jax.random.normal(kx, (n_in, num_samples))
    return _Regression(X, target @ X)


def _key(c):
    return jax.random.split(jax.random.key(c["seed"]))[0]


def _keys(c, num=2):
    return jax.random.split(jax.random.key(c["seed"]), num)


def _diagonal_model(c):
    return models.DiagonalLinear.relaxed_balanced(
        _keys(c, 3)[0], (c["n"],), c["depth"], c["lam"], scale=c["scale"]
    )


def _diagonal_loss(c):
    _, kdata, kx = _keys(c, 3)
    # Sparse regression with fewer samples than unknowns: the implicit bias matters.
    num_samples = max(1, c["n"] // 2)
    X = jax.random.normal(kx, (num_samples, c["n"]))
    target = jnp.zeros(c["n"]).at[:2].set(jax.random.normal(kdata, (2,))[: c["n"]])
    return _VectorRegression(X, X @ target)


def _two_layer_model(c):
    return models.TwoLayerLinear.relaxed_balanced(
        _keys(c)[0], c["n"], c["r"], c["m"], c["lam"], scale=c["scale"]
    )


def _two_layer_loss(c):
    return _regression(_keys(c)[1], c["n"], c["m"], min(c["r"], c["n"], c["m"]))


def _deep_model(c):
    widths = (c["n"],) * (c["depth"] + 1)
    return models.DeepLinear.relaxed_balanced(_keys(c)[0], widths, c["lam"], scale=c["scale"])


def _square_regression_loss(c):
    return _regression(_keys(c)[1], c["n"], c["n"], max(1, c["n"] // 2))


def _neural_ode_model(c):
    return models.LinearNeuralODE.relaxed_balanced(
        _keys(c)[0],
        c["n"],
        degree=c["degree"],
        lam=c["lam"],
        scale=c["scale"],
        adjoint=dfx.DirectAdjoint(),
        max_steps=256,
    )


def _neural_ode_cast(model, dtype):
    # Rebuilt, not cast: the depth-solve tolerances are static and follow the dtype.
    return models.LinearNeuralODE(
        jnp.asarray(model.coeffs, dtype), adjoint=dfx.DirectAdjoint(), max_steps=256
    )


def _relu_network(key, c):
    # The widths and skips were checked with the options (`_options._check_relu`).
    widths = tuple(c["widths"])
    if c["skip"]:
        return models.layered_dag(key, widths, c["skip"], bias=c["bias"], scale=c["scale"])
    return models.ReLUNetwork.random(key, widths, bias=c["bias"], scale=c["scale"])


# Student and teacher of one architecture; the student regresses the teacher's outputs
# on Gaussian inputs, with the loss on the network's outputs.
def _relu_model(c):
    return _relu_network(_keys(c, 3)[0], c)


def _relu_loss(c):
    _, kteacher, kx = _keys(c, 3)
    teacher = _relu_network(kteacher, c)
    X = jax.random.normal(kx, (c["samples"], teacher.n_inputs))
    return OutputLoss(X, jax.vmap(teacher)(X))


# Which parameters are values, which change the data: in `_catalog` (read before JAX loads).
_BUILDERS = {
    "diagonal": (
        _diagonal_model,
        _diagonal_loss,
        lambda c: models.DiagonalLinear.random(_key(c), (c["n"],), c["depth"]),
    ),
    "two-layer-linear": (
        _two_layer_model,
        _two_layer_loss,
        lambda c: models.TwoLayerLinear.random(_key(c), c["n"], c["r"], c["m"]),
    ),
    "deep-linear": (
        _deep_model,
        _square_regression_loss,
        lambda c: models.DeepLinear.random(_key(c), (c["n"],) * (c["depth"] + 1)),
    ),
    "neural-ode": (
        _neural_ode_model,
        _square_regression_loss,
        lambda c: models.LinearNeuralODE.random(_key(c), c["n"], c["degree"]),
    ),
    "relu": (_relu_model, _relu_loss, lambda c: _relu_network(_key(c), c)),
}
EXAMPLES = {
    name: Example(
        spec.name,
        spec.description,
        spec.defaults,
        *_BUILDERS[name],
        values=spec.values,
        data=spec.data,
        polynomial=spec.polynomial,
        cast_model=_neural_ode_cast if name == "neural-ode" else None,
    )
    for name, spec in CATALOG.items()
}
