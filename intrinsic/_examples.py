"""Built-in examples for the `intrinsic` command: a factorization, a loss and its metric.

Names, descriptions and defaults are in `_catalog` (plain data); this module builds them.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

import manifolds
import models
from flows import OutputLoss

from ._catalog import CATALOG, DEFAULT_EXAMPLE as DEFAULT_EXAMPLE


@dataclasses.dataclass(frozen=True)
class Example:
    """A built-in experiment: `build(config)` returns `(model, loss, K)`;
    `build_random(config)` a generic (unbalanced) model of the same architecture."""

    name: str
    description: str
    defaults: dict
    build: Callable
    build_random: Callable


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


def _diagonal(c):
    kmodel, kdata, kx = jax.random.split(jax.random.key(c["seed"]), 3)
    model = models.DiagonalLinear.relaxed_balanced(
        kmodel, (c["n"],), c["depth"], c["lam"], scale=c["scale"]
    )
    # Sparse regression with fewer samples than unknowns: the implicit bias matters.
    num_samples = max(1, c["n"] // 2)
    X = jax.random.normal(kx, (num_samples, c["n"]))
    target = jnp.zeros(c["n"]).at[:2].set(jax.random.normal(kdata, (2,))[: c["n"]])
    y = X @ target

    def loss(z, args=None):
        return 0.5 * jnp.mean((X @ z - y) ** 2)

    return model, loss, manifolds.intrinsic_metric(model)


def _two_layer(c):
    kmodel, kdata = jax.random.split(jax.random.key(c["seed"]))
    model = models.TwoLayerLinear.relaxed_balanced(
        kmodel, c["n"], c["r"], c["m"], c["lam"], scale=c["scale"]
    )
    loss = _regression(kdata, c["n"], c["m"], min(c["r"], c["n"], c["m"]))
    return model, loss, manifolds.intrinsic_metric(model)


def _deep(c):
    kmodel, kdata = jax.random.split(jax.random.key(c["seed"]))
    widths = (c["n"],) * (c["depth"] + 1)
    model = models.DeepLinear.relaxed_balanced(kmodel, widths, c["lam"], scale=c["scale"])
    loss = _regression(kdata, c["n"], c["n"], max(1, c["n"] // 2))
    return model, loss, manifolds.intrinsic_metric(model)


def _neural_ode(c):
    kmodel, kdata = jax.random.split(jax.random.key(c["seed"]))
    model = models.LinearNeuralODE.relaxed_balanced(
        kmodel,
        c["n"],
        degree=c["degree"],
        lam=c["lam"],
        scale=c["scale"],
        adjoint="direct",
        max_steps=256,
    )
    loss = _regression(kdata, c["n"], c["n"], max(1, c["n"] // 2))
    return model, loss, manifolds.intrinsic_metric(model)


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


def _relu(c):
    # Student and teacher of one architecture; the student regresses the teacher's
    # outputs on Gaussian inputs, with the loss on the network's outputs.
    kstudent, kteacher, kx = jax.random.split(jax.random.key(c["seed"]), 3)
    model = _relu_network(kstudent, c)
    teacher = _relu_network(kteacher, c)
    X = jax.random.normal(kx, (c["samples"], model.n_inputs))
    return model, OutputLoss(X, jax.vmap(teacher)(X)), manifolds.intrinsic_metric(model)


_BUILDERS = {
    "diagonal": (
        _diagonal,
        lambda c: models.DiagonalLinear.random(_key(c), (c["n"],), c["depth"]),
    ),
    "two-layer-linear": (
        _two_layer,
        lambda c: models.TwoLayerLinear.random(_key(c), c["n"], c["r"], c["m"]),
    ),
    "deep-linear": (
        _deep,
        lambda c: models.DeepLinear.random(_key(c), (c["n"],) * (c["depth"] + 1)),
    ),
    "neural-ode": (
        _neural_ode,
        lambda c: models.LinearNeuralODE.random(_key(c), c["n"], c["degree"]),
    ),
    "relu": (_relu, lambda c: _relu_network(_key(c), c)),
}
EXAMPLES = {
    name: Example(spec.name, spec.description, spec.defaults, *_BUILDERS[name])
    for name, spec in CATALOG.items()
}
