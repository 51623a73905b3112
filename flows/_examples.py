"""Built-in examples for the `intrinsic` command: a factorization, a loss and its metric."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

import manifolds
import models


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

    def loss(z):
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

    def loss(z):
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


EXAMPLES = {
    e.name: e
    for e in (
        Example(
            "diagonal",
            "Diagonal linear chain z = u_1 ⊙ ... ⊙ u_L on sparse regression "
            "(u_{j+1}^2 - u_j^2 = lam).",
            dict(n=6, depth=2, lam=0.5, scale=0.5, t1=20.0),
            _diagonal,
            lambda c: models.DiagonalLinear.random(_key(c), (c["n"],), c["depth"]),
        ),
        Example(
            "two-layer-linear",
            "Two-layer linear net Z = U V^T, relaxed balanced (U^T U - V^T V = lam I), "
            "on low-rank regression.",
            dict(n=4, r=3, m=5, lam=0.5, scale=1.0, t1=10.0),
            _two_layer,
            lambda c: models.TwoLayerLinear.random(_key(c), c["n"], c["r"], c["m"]),
        ),
        Example(
            "deep-linear",
            "Deep linear net Z = W_L ... W_1 with square widths n, relaxed balanced "
            "(W_{j+1}^T W_{j+1} - W_j W_j^T = lam I), on low-rank regression.",
            dict(n=3, depth=3, lam=0.3, scale=1.0, t1=10.0),
            _deep,
            lambda c: models.DeepLinear.random(_key(c), (c["n"],) * (c["depth"] + 1)),
        ),
    )
}
DEFAULT_EXAMPLE = "two-layer-linear"
