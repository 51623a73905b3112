import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flows
import manifolds

from .helpers import all_factorizations, dense_laws_jacobian, quadratic_loss


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_laws_orthogonal_to_every_loss_gradient(name, getkey):
    model = all_factorizations[name](getkey())
    phi, theta = manifolds.lifting_function(model)
    dh = dense_laws_jacobian(model)
    for _ in range(3):
        f = quadratic_loss(getkey(), jax.eval_shape(phi, theta))
        grad = ravel_pytree(jax.grad(lambda p, f=f: f(phi(p)))(theta))[0]
        assert np.linalg.norm(grad) > 1e-3  # not a vacuous check
        assert np.max(np.abs(dh @ grad)) <= 1e-12 * np.linalg.norm(grad) * max(
            1, np.max(np.abs(dh))
        )


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_laws_constant_along_flow(name, getkey):
    # Keep the init away from the saddle at θ = 0, where nothing moves and the check below
    # would be vacuous.
    model = jax.tree.map(lambda x: x + 0.5 * jnp.sign(x), all_factorizations[name](getkey()))
    f = quadratic_loss(getkey(), jax.eval_shape(model.lift))
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    saveat = flows.SaveAt(ts=np.linspace(0, 2, 5))
    sol = flows.euclidean_flow(model, f, 0.0, 2.0, saveat=saveat, stepsize_controller=tight)
    assert sol.losses[-1] < sol.losses[0]  # the flow did move
    assert float(sol.conservation_drift) <= 1e-7
    # A non-conserved quantity of comparable size does drift: the check can fail.
    z_norms = sum(
        np.sum(np.asarray(x).reshape(5, -1) ** 2, axis=1) for x in jax.tree.leaves(sol.zs)
    )
    assert abs(z_norms[-1] - z_norms[0]) > 1e-4
