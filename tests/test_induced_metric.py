import jax
import jax.flatten_util
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import manifolds
import models

from .helpers import all_factorizations, dense_jacobian


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_equals_dense_jjt(name, getkey):
    model = all_factorizations[name](getkey())
    J = dense_jacobian(model)
    op = manifolds.induced_metric(model)
    M = op.as_matrix()
    assert np.allclose(M, J @ J.T, rtol=1e-12, atol=1e-12)
    assert np.allclose(M, M.T, atol=1e-13)
    assert np.min(np.linalg.eigvalsh(M)) >= -1e-12 * np.max(np.abs(M))
    assert lx.is_symmetric(op) and lx.is_positive_semidefinite(op)


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_mv_under_jit_and_vmap(name, getkey):
    model = all_factorizations[name](getkey())
    J = dense_jacobian(model)
    # z may be a PyTree (e.g. the path-lifting of a layered ReLU network): work raveled.
    z_flat, unravel = jax.flatten_util.ravel_pytree(model.lift())
    flat_gs = jax.random.normal(getkey(), (4, z_flat.size))
    gs = jax.vmap(unravel)(flat_gs)

    @jax.jit
    def apply(m, g):
        return manifolds.induced_metric(m).mv(g)

    out = jax.vmap(apply, in_axes=(None, 0))(model, gs)
    out = jax.vmap(lambda o: jax.flatten_util.ravel_pytree(o)[0])(out)
    expected = (J @ J.T @ flat_gs.T).T
    assert np.allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_two_layer_closed_form(getkey):
    m = models.TwoLayerLinear.random(getkey(), 3, 2, 4)
    X = jax.random.normal(getkey(), (3, 4))
    expected = m.U @ m.U.T @ X + X @ m.V @ m.V.T
    assert np.allclose(manifolds.induced_metric(m).mv(X), expected, rtol=1e-12)


def test_deep_linear_closed_form(getkey):
    m = models.DeepLinear.random(getkey(), (2, 3, 4, 2))
    w1, w2, w3 = m.weights
    X = jax.random.normal(getkey(), (2, 2))
    expected = (w3 @ w2) @ (w3 @ w2).T @ X + w3 @ w3.T @ X @ w1.T @ w1 + X @ (w2 @ w1).T @ (w2 @ w1)
    assert np.allclose(manifolds.induced_metric(m).mv(X), expected, rtol=1e-12)


def test_diagonal_closed_form():
    u, v = jnp.array([2.0, -1.0]), jnp.array([1.0, 3.0])
    M = manifolds.induced_metric(models.DiagonalLinear([u, v])).as_matrix()
    assert np.allclose(M, np.diag(u**2 + v**2))


def test_rejects_non_factorization():
    with pytest.raises(TypeError, match="AbstractFactorization"):
        manifolds.induced_metric(jnp.ones(3))


def _rank(a, rtol=1e-9):
    s = np.linalg.svd(np.asarray(a), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def test_bookkeeping_reference_values(getkey):
    # THEORY.md §4: (n, m, r) = (3, 3, 2) at random θ: D = 12, rank ∂φ = 8, 3 laws,
    # dim(ker ∂φ ∩ ker ∂h) = 1.
    model = models.TwoLayerLinear.random(getkey(), 3, 2, 3)
    J = dense_jacobian(model)
    dh = jax.jacfwd(
        lambda t: (lambda m: m.conservation_laws()[jnp.triu_indices(2)])(
            jax.flatten_util.ravel_pytree(model)[1](t)
        )
    )(jax.flatten_util.ravel_pytree(model)[0])
    assert J.shape == (9, 12)
    assert _rank(J) == 8
    assert _rank(dh) == 3
    assert 12 - _rank(np.vstack([J, dh])) == 1
    # Linear net widths (2, 2, 2): D = 8, rank W = rank ∂φ = 4.
    deep = models.DeepLinear.random(getkey(), (2, 2, 2))
    assert dense_jacobian(deep).shape == (4, 8)
    assert _rank(dense_jacobian(deep)) == 4
