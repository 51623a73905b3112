"""Built-in examples for the `intrinsic` command: a factorization, a loss and its metric."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

import manifolds
import models
from flows import OutputLoss


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
        Example(
            "neural-ode",
            "Linear neural ODE x'(s) = A(s) x(s), A in Legendre polynomials of degree "
            "`degree`, relaxed balanced (H(s) = lam I up to the projection), on low-rank "
            "regression; the log-mean metric K(z).",
            dict(n=3, degree=10, lam=0.5, scale=1.0, t1=5.0),
            _neural_ode,
            lambda c: models.LinearNeuralODE.random(_key(c), c["n"], c["degree"]),
        ),
        Example(
            "relu",
            "ReLU network (layered, or a DAG with --skip I:J), student-teacher regression "
            "on Gaussian inputs; path-lifting z, metric K(z) = M(θ(z)); both flows stop "
            "and restart at each change of activation pattern on the data.",
            # Seed 2: four changes of activation pattern before t1 and no weight crossing
            # zero (where a neuron's whole path block can vanish and z forgets the
            # direction of its weights; see flows.intrinsic_flow).
            dict(widths=(2, 5, 1), bias=False, skip=(), samples=12, scale=1.0, t1=6.0, seed=2),
            _relu,
            lambda c: _relu_network(_key(c), c),
        ),
    )
}
DEFAULT_EXAMPLE = "two-layer-linear"
