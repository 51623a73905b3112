"""Intrinsic metrics of ReLU networks: closed form (two layers) and path metric (any DAG)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

import manifolds
import models

from .helpers import dense_jacobian
from .test_relu_models import SKIP_EDGES

NETWORKS = {
    "mlp-2-3-2": lambda k: models.ReLUNetwork.random(k, (2, 3, 2)),
    "mlp-bias-3-4-2": lambda k: models.ReLUNetwork.random(k, (3, 4, 2), bias=True),
    "mlp-bias-2-3-2-1": lambda k: models.ReLUNetwork.random(k, (2, 3, 2, 1), bias=True),
    "dag-skip-bias": lambda k: models.ReLUDAG.random(k, 2, 4, 1, SKIP_EDGES, bias=True),
}


def _dense_metric(net):
    jac = eqx.filter_jit(dense_jacobian)(net)
    return np.asarray(jac @ jac.T)


def _params(net):
    return ravel_pytree(eqx.filter(net, eqx.is_inexact_array))[0]


def _with_params(net, flat):
    params, skeleton = eqx.partition(net, eqx.is_inexact_array)
    return eqx.combine(ravel_pytree(params)[1](jnp.asarray(flat)), skeleton)


def _same_laws_elsewhere(net, key):
    """An independent θ′ on the level set of `net`: fresh random magnitudes with the signs
    of θ₀, rescaled neuron by neuron so that h(θ′) = h(θ₀) (solved by SciPy)."""
    theta = _params(net)
    fresh = jnp.sign(theta) * jnp.exp(0.4 * jax.random.normal(key, theta.shape)) * jnp.abs(theta)
    other = _with_params(net, fresh)
    target = np.asarray(net.conservation_laws())
    laws = jax.jit(lambda mu: other.rescale(mu).conservation_laws())
    jac = jax.jit(jax.jacfwd(lambda mu: other.rescale(mu).conservation_laws()))
    sol = scipy.optimize.root(
        lambda mu: np.asarray(laws(jnp.asarray(mu))) - target,
        np.zeros(net.num_hidden),
        jac=lambda mu: np.asarray(jac(jnp.asarray(mu))),
        tol=1e-15,
    )
    result = other.rescale(jnp.asarray(sol.x))
    np.testing.assert_allclose(result.conservation_laws(), target, rtol=1e-11, atol=1e-12)
    return result


@eqx.filter_jit
def _matrix_and_tags(metric, z):
    op = metric(z)
    return op.as_matrix(), lx.is_symmetric(op) and lx.is_positive_semidefinite(op)


_recover = eqx.filter_jit(lambda metric, z: metric.recover(z))


def _metric_matrix(metric, z):
    matrix, tagged = _matrix_and_tags(metric, z)
    assert tagged
    return np.asarray(matrix)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_metric_equals_jjt_on_the_level_set(name, getkey):
    net = NETWORKS[name](getkey())
    other = _same_laws_elsewhere(net, getkey())
    z0, z1 = net.lift(), other.lift()
    assert np.max(np.abs(ravel_pytree(z1)[0] - ravel_pytree(z0)[0])) > 1e-2  # a new point
    metrics = [manifolds.intrinsic_metric(net), manifolds.ReLUPathMetric(net)]
    if name in ("dag-skip-bias", "mlp-bias-3-4-2"):
        metrics = metrics[:1] + [manifolds.ReLUPathMetric(net, dense_limit=0)]  # CG
    for metric in metrics:
        for model, z in ((net, z0), (other, z1)):
            expected = _dense_metric(model)
            got = _metric_matrix(metric, z)
            np.testing.assert_allclose(
                got, expected, rtol=1e-10, atol=1e-11 * np.abs(expected).max()
            )
            recovered = _recover(metric, z)
            np.testing.assert_allclose(_params(recovered), _params(model), rtol=1e-10, atol=1e-12)


def test_dispatch():
    two = models.ReLUNetwork.random(jax.random.key(0), (2, 3, 2), bias=True)
    assert isinstance(manifolds.intrinsic_metric(two), manifolds.TwoLayerReLUMetric)
    deep = models.ReLUNetwork.random(jax.random.key(0), (2, 3, 3, 2))
    assert isinstance(manifolds.intrinsic_metric(deep), manifolds.ReLUPathMetric)
    dag = models.ReLUDAG.random(jax.random.key(0), 2, 4, 1, SKIP_EDGES)
    metric = manifolds.intrinsic_metric(dag)
    assert isinstance(metric, manifolds.ReLUPathMetric)
    assert isinstance(metric, manifolds.AbstractReLUMetric) and metric.network is dag


def test_two_layer_neuron_formula(getkey):
    # THEORY §3, written out for one neuron: K_j[X] = z zᵀX/‖v‖² + X zᵀz/‖u‖².
    net = models.ReLUNetwork.random(getkey(), (3, 2, 2), bias=True)
    w1, w2 = net.weights
    b1, b2 = net.biases
    metric = manifolds.intrinsic_metric(net)
    x = jax.tree.map(lambda t: jax.random.normal(getkey(), t.shape), net.lift())
    out = metric(net.lift()).mv(x)
    for j in range(2):
        u, v = w2[:, j], jnp.append(w1[j], b1[j])
        c = v @ v - u @ u
        zj = jnp.outer(u, v)
        s = jnp.sqrt(c**2 + 4 * jnp.sum(zj**2))
        xj = jnp.concatenate([x[0][:, j, :], x[1][:, j, None]], axis=1)
        kj = zj @ zj.T @ xj / ((s + c) / 2) + xj @ zj.T @ zj / ((s - c) / 2)
        # Relative to the block's scale, not entry by entry: one entry can be
        # 1e-6 of the others and carry their rounding error.
        got = jnp.concatenate([out[0][:, j, :], out[1][:, j, None]], axis=1)
        assert jnp.linalg.norm(got - kj) <= 1e-12 * jnp.linalg.norm(kj)
    np.testing.assert_allclose(out[2], x[2])  # output biases: identity
    del b2


def test_closed_form_equals_path_metric_away_from_z0(getkey):
    net = models.ReLUNetwork.random(getkey(), (3, 4, 2), bias=True)
    closed, path = manifolds.TwoLayerReLUMetric(net), manifolds.ReLUPathMetric(net)
    for scale in (0.3, 1.0, 4.0):
        # Any z = Φ(θ) with the signs of θ₀, at any size.
        theta = _params(net) * jnp.exp(0.3 * jax.random.normal(getkey(), _params(net).shape))
        z = _with_params(net, scale * theta).lift()
        np.testing.assert_allclose(
            _metric_matrix(closed, z), _metric_matrix(path, z), rtol=1e-10, atol=1e-12
        )


def _chain_cubic_metric(z, lam1, lam2):
    # THEORY §3 scalar chain, L = 3: p(x) = x(x + Λ₁)(x + Λ₂), root x ≥ max(0, −Λ₁, −Λ₂)
    # of p(x) = z², K = p′(x). Λ₁ = λ₁, Λ₂ = λ₁ + λ₂ with λ_j = u_{j+1}² − u_j².
    big1, big2 = lam1, lam1 + lam2
    poly = np.poly1d([1.0, big1 + big2, big1 * big2, -(z**2)])
    lower = max(0.0, -big1, -big2)
    roots = [r.real for r in poly.roots if abs(r.imag) < 1e-9 and r.real >= lower - 1e-12]
    x = max(roots)
    return 3 * x**2 + 2 * (big1 + big2) * x + big1 * big2


def test_width_one_depth_three_chain(getkey):
    w = jnp.abs(jax.random.normal(getkey(), (3,))) + 0.3
    net = models.ReLUNetwork([w[0].reshape(1, 1), w[1].reshape(1, 1), w[2].reshape(1, 1)])
    metric = manifolds.intrinsic_metric(net)
    chain = models.DiagonalLinear([w[0], w[1], w[2]])
    reference = manifolds.intrinsic_metric(chain)
    lam1, lam2 = (float(x) for x in chain.conservation_laws())
    z0 = float(w[0] * w[1] * w[2])
    for z in (z0, 0.2 * z0, 3.0 * z0):
        got = _metric_matrix(metric, (jnp.full((1, 1, 1, 1), z),))
        np.testing.assert_allclose(got, [[_chain_cubic_metric(z, lam1, lam2)]], rtol=1e-11)
        np.testing.assert_allclose(
            got[0, 0], reference(jnp.asarray(z)).as_matrix()[0, 0], rtol=1e-11
        )
    np.testing.assert_allclose(_metric_matrix(metric, net.lift()), _dense_metric(net), rtol=1e-12)


def test_recover_is_differentiable(getkey):
    net = NETWORKS["dag-skip-bias"](getkey())
    metric = manifolds.intrinsic_metric(net)
    z = net.lift()
    # A direction tangent to the image of Φ: ∂Φ(θ)δ.
    phi, theta = manifolds.lifting_function(net)
    delta = jax.tree.map(lambda t: jax.random.normal(getkey(), t.shape), theta)
    dz = jax.jvp(phi, (theta,), (delta,))[1]

    def lift_and_laws(z):
        recovered = metric.recover(z)
        return recovered.lift(), recovered.conservation_laws()

    (z_again, laws), (dz_again, dlaws) = jax.jit(lambda z, dz: jax.jvp(lift_and_laws, (z,), (dz,)))(
        z, dz
    )
    np.testing.assert_allclose(z_again, z, rtol=1e-11)
    np.testing.assert_allclose(dz_again, dz, rtol=1e-9, atol=1e-10 * np.abs(dz).max())
    np.testing.assert_allclose(dlaws, 0, atol=1e-10 * np.abs(dz).max())
    # Reverse mode agrees with forward mode.
    w = jax.random.normal(getkey(), _params(net).shape)
    scalar = lambda z: jnp.vdot(w, _params(metric.recover(z)))
    grad = jax.jit(jax.grad(scalar))(z)
    forward = jax.jit(lambda z, dz: jax.jvp(scalar, (z,), (dz,))[1])(z, dz)
    np.testing.assert_allclose(jnp.vdot(grad, dz), forward, rtol=1e-9)


def test_metric_under_jit_vmap_and_grad(getkey):
    net = NETWORKS["mlp-bias-2-3-2-1"](getkey())
    metric = manifolds.intrinsic_metric(net)
    z = net.lift()
    gs = jax.random.normal(getkey(), (3, *z[0].shape))
    zeros = jax.tree.map(jnp.zeros_like, z)
    cotangents = jax.vmap(lambda g: (g, *zeros[1:]))(gs)
    out = jax.jit(jax.vmap(lambda m, g: m(z).mv(g), in_axes=(None, 0)))(metric, cotangents)
    expected = _dense_metric(net) @ jax.vmap(lambda g: ravel_pytree(g)[0])(cotangents).T
    np.testing.assert_allclose(
        jax.vmap(lambda o: ravel_pytree(o)[0])(out), expected.T, rtol=1e-10, atol=1e-12
    )
    # d/dz of a quadratic form of K(z) (e.g. for an implicit solver), by finite differences.
    g = ravel_pytree(z)[1](jax.random.normal(getkey(), (net.num_paths,)))
    form = jax.jit(lambda z: sum(jnp.vdot(a, b) for a, b in zip(metric(z).mv(g), g)))
    dz = jax.tree.map(lambda t: 1e-3 * t * jax.random.normal(getkey(), t.shape), z)
    grad = jax.jit(jax.grad(form))(z)
    step = 1e-5
    plus = form(jax.tree.map(lambda a, b: a + step * b, z, dz))
    minus = form(jax.tree.map(lambda a, b: a - step * b, z, dz))
    directional = sum(jnp.vdot(a, b) for a, b in zip(grad, dz))
    # Relative to |grad| |dz|, the size of the terms of the directional derivative (which
    # can itself be small by cancellation: 1e-5 relative to itself was seen).
    scale = jnp.linalg.norm(ravel_pytree(grad)[0]) * jnp.linalg.norm(ravel_pytree(dz)[0])
    assert abs(directional - (plus - minus) / (2 * step)) <= 1e-6 * scale


@pytest.mark.parametrize("name", ["mlp-bias-2-3-2-1", "dag-skip-bias", "mlp-bias-3-4-2"])
def test_weight_sign_crossing(name, getkey):
    # θ₀ with one small weight; θ₁ = θ₀ with that weight's sign flipped has the same laws,
    # z₁ = Φ(θ₁) has the signs of the paths through it flipped.
    net = NETWORKS[name](getkey())
    theta = np.array(_params(net))
    e = int(jax.random.randint(getkey(), (), 0, theta.size))
    theta[e] = 1e-3 * np.sign(theta[e])
    net = _with_params(net, theta)
    flipped = theta.copy()
    flipped[e] = -flipped[e]
    crossed = _with_params(net, flipped)
    metric = manifolds.intrinsic_metric(net)
    z1 = crossed.lift()
    assert bool(metric.consistent(net.lift()))
    # K does not depend on the signs.
    np.testing.assert_allclose(
        _metric_matrix(metric, z1), _dense_metric(crossed), rtol=1e-9, atol=1e-12
    )
    updated = metric.with_signs_from(z1)
    assert bool(updated.consistent(z1)) and not bool(updated.consistent(net.lift()))
    np.testing.assert_allclose(_params(_recover(updated, z1)), flipped, rtol=1e-9, atol=1e-12)
    # The same from explicit path signs (as at an event, where z₁ ≈ 0 on the crossing).
    signs = jax.tree.map(lambda x: x > 0, z1)
    again = metric.with_signs_from(net.lift(), signs)
    np.testing.assert_array_equal(again.signs, updated.signs)


def test_failures_are_reported(getkey):
    net = NETWORKS["mlp-bias-2-3-2-1"](getkey())
    theta = _params(net)
    zero = _with_params(net, theta.at[3].set(0.0))
    for build in (manifolds.intrinsic_metric, manifolds.ReLUPathMetric):
        with pytest.raises(ValueError, match="exactly zero"):
            build(zero)
    with pytest.raises(ValueError, match="exactly zero"):
        manifolds.intrinsic_metric(_with_params(NETWORKS["mlp-2-3-2"](getkey()), jnp.zeros(12)))
    # A zero entry of z (off the dense set): raised, or NaN with throw=False.
    z = net.lift()
    bad = (z[0].at[0, 0, 0, 0].set(0.0), *z[1:])
    metric = manifolds.intrinsic_metric(net)
    with pytest.raises(RuntimeError, match="zero"):
        metric(bad)
    with pytest.raises(Exception, match="zero"):
        jax.block_until_ready(jax.jit(lambda m, z: m(z).as_matrix())(metric, bad))
    quiet = manifolds.ReLUPathMetric(net, throw=False)
    # Every block that goes through the recovered θ is NaN (the output-bias paths,
    # Φ = b, have the identity block whatever z is).
    matrix = np.asarray(quiet(bad).as_matrix())
    assert np.all(np.isnan(matrix[:-1, :-1]))
    two = models.ReLUNetwork.random(getkey(), (2, 3, 1))
    z2 = two.lift()
    quiet_two = manifolds.TwoLayerReLUMetric(two, throw=False)
    assert np.all(np.isnan(quiet_two((z2[0].at[0, 1].set(0.0),)).as_matrix()[0]))
    with pytest.raises(TypeError, match="AbstractReLUNetwork"):
        manifolds.ReLUPathMetric(models.DeepLinear.random(getkey(), (2, 2, 2)))
    with pytest.raises(ValueError, match="two-layer"):
        manifolds.TwoLayerReLUMetric(models.ReLUNetwork.random(getkey(), (2, 2, 2, 2)))
