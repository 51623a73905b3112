"""Built-in examples for the `intrinsic` command: a factorization, a loss and its metric.

Names, descriptions and defaults are in `_catalog` (plain data); this module builds them.
"""

import dataclasses
from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp

import manifolds
import models
from flows import OutputLoss

from ._catalog import CATALOG, DEFAULT_EXAMPLE as DEFAULT_EXAMPLE


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

    def build(self, config: dict):
        model = self.build_model(config)
        return model, self.build_loss(config), manifolds.intrinsic_metric(model)


def _regression(key, n_out, n_in, rank, num_samples=20):
    r"""$f(Z) = \frac{1}{2N}\|ZX - Y\|_F^2$ with $Y = Z_\star X$, $Z_\star$ of rank `rank`."""
    ka, kb, kx = jax.random.split(key, 3)
    target = jax.random.normal(ka, (n_out, rank)) @ jax.random.normal(kb, (rank, n_in))
    target = target / jnp.sqrt(rank)
    X = jax.random.normal(kx, (n_in, num_samples))
    Y = target @ X

    def loss(z, args=None):
        return 0.5 * jnp.mean(jnp.sum((z @ X - Y) ** 2, axis=0))

    return loss


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
    y = X @ target

    def loss(z, args=None):
        return 0.5 * jnp.mean((X @ z - y) ** 2)

    return loss


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


def _relu_network(key, c):
    widths = tuple(c["widths"])
    if len(widths) < 3:
        raise ValueError(f"--widths needs at least one hidden layer, got {widths}")
    if c["skip"]:
        for i, j in c["skip"]:
            if not 0 <= i < j - 1 < len(widths) - 1:
                raise ValueError(
                    f"--skip {i}:{j}: need 0 <= i and i + 1 < j <= {len(widths) - 1} (layers "
                    f"are numbered 0 = inputs to {len(widths) - 1} = outputs)"
                )
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


# λ and the scale flow through the linear constructors as values. For the ReLU example
# nothing is a value of the student alone: the scale also sets the teacher (the data).
_LINEAR_VALUES = frozenset({"lam", "scale"})
_BUILDERS = {
    "diagonal": (
        _diagonal_model,
        _diagonal_loss,
        lambda c: models.DiagonalLinear.random(_key(c), (c["n"],), c["depth"]),
        _LINEAR_VALUES,
    ),
    "two-layer-linear": (
        _two_layer_model,
        _two_layer_loss,
        lambda c: models.TwoLayerLinear.random(_key(c), c["n"], c["r"], c["m"]),
        _LINEAR_VALUES,
    ),
    "deep-linear": (
        _deep_model,
        _square_regression_loss,
        lambda c: models.DeepLinear.random(_key(c), (c["n"],) * (c["depth"] + 1)),
        _LINEAR_VALUES,
    ),
    "neural-ode": (
        _neural_ode_model,
        _square_regression_loss,
        lambda c: models.LinearNeuralODE.random(_key(c), c["n"], c["degree"]),
        _LINEAR_VALUES,
    ),
    "relu": (_relu_model, _relu_loss, lambda c: _relu_network(_key(c), c), frozenset()),
}
EXAMPLES = {
    name: Example(spec.name, spec.description, spec.defaults, *_BUILDERS[name])
    for name, spec in CATALOG.items()
}
