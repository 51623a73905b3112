"""Any Equinox model as a factorization: outputs on a batch, the empirical NTK as M."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flows
import manifolds
import models

from .helpers import dense_jacobian


def _ntk(lifting):
    """J Jᵀ of the outputs with `jax.jacfwd` through the model itself (not the lifting)."""
    params, static = eqx.partition(lifting.model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def outputs(t):
        return jax.vmap(eqx.combine(unravel(t), static))(lifting.inputs).reshape(-1)

    J = jax.jacfwd(outputs)(flat)
    return J @ J.T, flat.size


@pytest.mark.parametrize("kind", ["mlp", "neural-ode"])
def test_metric_is_the_empirical_ntk(kind, getkey):
    if kind == "mlp":
        model = eqx.nn.MLP(3, 2, 6, 2, activation=jnp.tanh, key=getkey())
        inputs = jax.random.normal(getkey(), (5, 3))
    else:
        # Forward mode through the depth solve needs DirectAdjoint.
        model = models.NeuralODE(2, 6, 1, key=getkey(), adjoint=dfx.DirectAdjoint(), num_steps=8)
        inputs = jax.random.normal(getkey(), (4, 2))
    lifting = models.OutputLifting(model, inputs)
    z = lifting.lift()
    M = eqx.filter_jit(lambda m: manifolds.induced_metric(m).as_matrix())(lifting)
    ntk, num_params = _ntk(lifting)
    d = z.size
    assert M.shape == (d, d)
    assert np.allclose(M, ntk, rtol=1e-12, atol=1e-12 * np.abs(ntk).max())
    # θ is the model's parameters only: the inputs are data.
    assert dense_jacobian(lifting).shape == (d, num_params)
    assert lifting.conservation_laws().shape == (0,)


def test_inputs_are_stored_exactly_and_are_not_parameters(getkey):
    model = eqx.nn.Linear(3, 2, key=getkey())
    inputs = jax.random.normal(getkey(), (7, 3))
    lifting = models.OutputLifting(model, inputs)
    assert lifting.inputs.dtype == inputs.dtype and bool(jnp.all(lifting.inputs == inputs))
    _, theta = manifolds.lifting_function(lifting)
    assert sum(x.size for x in jax.tree.leaves(theta)) == 3 * 2 + 2
    assert np.allclose(lifting.lift(), inputs @ model.weight.T + model.bias[None], atol=1e-14)
    tokens = models.OutputLifting(eqx.nn.Embedding(10, 4, key=getkey()), jnp.arange(6))
    assert tokens.lift().shape == (6, 4) and tokens.inputs.dtype == jnp.arange(6).dtype
    assert np.allclose(lifting(inputs[0]), model(inputs[0]))


def test_euclidean_flow_trains_a_neural_ode(getkey):
    model = models.NeuralODE(2, 8, 1, key=getkey(), num_steps=8)
    inputs = jax.random.normal(getkey(), (6, 2))
    targets = jnp.sin(2 * inputs)
    lifting = models.OutputLifting(model, inputs)

    def loss(z, targets):
        return 0.5 * jnp.mean(jnp.sum((z - targets) ** 2, axis=-1))

    saveat = flows.SaveAt(ts=jnp.linspace(0.0, 3.0, 4))
    sol = flows.euclidean_flow(lifting, loss, 0.0, 3.0, args=targets, saveat=saveat)
    # A gradient flow never increases its loss (how much it drops depends on the draw).
    assert sol.successful and bool(jnp.all(jnp.diff(sol.losses) <= 0))
    assert sol.losses[-1] < sol.losses[0]
    assert sol.zs.shape == (4, 6, 2) and sol.conserved.shape == (4, 0)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda k: models.OutputLifting(eqx.nn.Linear(3, 2, key=k), jnp.ones((4, 5))),
            ValueError,
            "cannot be applied to one input of shape \\(5,\\)",
        ),
        (
            lambda k: models.OutputLifting(eqx.nn.Linear(3, 2, key=k), jnp.ones(())),
            ValueError,
            "leading axis",
        ),
        (
            lambda k: models.OutputLifting(eqx.nn.Linear(3, 2, key=k), jnp.ones((0, 3))),
            ValueError,
            "leading axis",
        ),
        (lambda k: models.OutputLifting("not a model", jnp.ones((4, 3))), TypeError, "[Cc]allable"),
        (
            lambda k: models.OutputLifting(eqx.nn.Lambda(jnp.tanh), jnp.ones((4, 3))),
            ValueError,
            "no floating-point",
        ),
        (
            lambda k: models.NeuralODE(2, 4, 1, key=k, adjoint="nope"),
            ValueError,
            "Unknown `adjoint`",
        ),
        (lambda k: models.NeuralODE(0, 4, 1, key=k), ValueError, "dim"),
    ],
)
def test_bad_inputs(build, error, match, getkey):
    with pytest.raises(error, match=match):
        build(getkey())
