"""Transformations of the solver-backed numerics: jit = eager, vmap, grad/jacfwd against
central differences, reported non-convergence, NaN parameters under jit, neural-ODE
adjoints."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import manifolds
import models


def _metrics(key):
    two = models.ReLUNetwork.random(key, (2, 3, 2), bias=True)
    deep = models.ReLUNetwork.random(key, (2, 3, 2, 1), bias=True)
    lin = models.TwoLayerLinear.relaxed_balanced(key, 2, 2, 2, -0.3)
    return {
        "two-layer": (manifolds.TwoLayerReLUMetric(two), two),
        "path": (manifolds.ReLUPathMetric(deep), deep),
        "recovered": (manifolds.RecoveredMetric(lin), lin),
        # An invertible square z with well-separated singular values (1, 2, 3): the
        # derivative goes through the SVD, whose conditioning is 1/min gap.
        "log-mean": (manifolds.LogMeanMetric(), _separated(key)),
    }


NAMES = ("two-layer", "path", "recovered", "log-mean")


def _separated(key):
    kq, kr = jax.random.split(key)
    q = jnp.linalg.qr(jax.random.normal(kq, (3, 3)))[0]
    r = jnp.linalg.qr(jax.random.normal(kr, (3, 3)))[0]
    root = jnp.sqrt(jnp.array([1.0, 2.0, 3.0]))
    return models.TwoLayerLinear(q * root[None, :], r * root[None, :])


def _flat(z):
    return ravel_pytree(z)


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name, getkey):
    metric, model = _metrics(getkey())[name]
    z = model.lift()
    g = jax.tree.map(lambda x: jax.random.normal(getkey(), x.shape), z)
    eager = _flat(metric(z).mv(g))[0]
    jitted = _flat(eqx.filter_jit(lambda m, z, g: m(z).mv(g))(metric, z, g))[0]
    assert np.allclose(eager, jitted, rtol=1e-12, atol=1e-12)
    # The metric object itself through jit (as a traced argument) too.
    again = _flat(eqx.filter_jit(lambda m: m)(metric)(z).mv(g))[0]
    assert np.allclose(eager, again, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ("two-layer", "path"))
def test_vmap_over_networks(name, getkey):
    keys = jax.random.split(getkey(), 3)
    build = (
        (lambda k: models.ReLUNetwork.random(k, (2, 3, 2), bias=True))
        if name == "two-layer"
        else (lambda k: models.ReLUNetwork.random(k, (2, 3, 2, 1), bias=True))
    )
    cls = manifolds.TwoLayerReLUMetric if name == "two-layer" else manifolds.ReLUPathMetric
    nets = [build(k) for k in keys]
    mets = [cls(n) for n in nets]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *mets)
    zs = jax.tree.map(lambda *xs: jnp.stack(xs), *[n.lift() for n in nets])
    g = jax.tree.map(lambda x: jax.random.normal(getkey(), x.shape[1:]), zs)
    batched = eqx.filter_vmap(lambda m, z: m(z).mv(g))(stacked, zs)
    for i, (m, n) in enumerate(zip(mets, nets)):
        one = _flat(m(n.lift()).mv(g))[0]
        row = jax.tree.map(lambda x, i=i: x[i], batched)
        assert np.allclose(_flat(row)[0], one, rtol=1e-11)


@pytest.mark.parametrize("name", NAMES)
def test_grad_and_jacfwd_match_central_differences(name, getkey):
    metric, model = _metrics(getkey())[name]
    z = model.lift()
    flat, unravel = _flat(z)
    g = unravel(jax.random.normal(getkey(), flat.shape))
    w = jax.random.normal(getkey(), flat.shape)

    def scalar(x):
        return jnp.vdot(w, _flat(metric(unravel(x)).mv(g))[0])

    grad = eqx.filter_jit(jax.grad(scalar))(flat)
    fwd = eqx.filter_jit(jax.jacfwd(scalar))(flat)
    value = eqx.filter_jit(scalar)
    h = 1e-5
    directions = jax.random.normal(getkey(), (4,) + flat.shape)
    fd = np.array([(value(flat + h * v) - value(flat - h * v)) / (2 * h) for v in directions])
    norm = float(jnp.linalg.norm(grad))
    err_grad = np.max(np.abs(np.array([jnp.vdot(grad, v) for v in directions]) - fd)) / norm
    err_fwd = np.max(np.abs(np.array([jnp.vdot(fwd, v) for v in directions]) - fd)) / norm
    print(f"{name}: |grad - FD| / |grad| = {err_grad:.2e}, jacfwd {err_fwd:.2e}")
    assert np.allclose(grad, fwd, rtol=1e-9, atol=1e-9 * norm)
    # RecoveredMetric: K(z ± h v) each come from a solve to rtol = sqrt(eps), so the
    # differences carry ~ rtol / h of solver noise.
    bound = 1e-4 if name == "recovered" else 1e-6
    assert err_grad <= bound and err_fwd <= bound


def test_non_convergence_is_a_result_code(getkey):
    net = models.ReLUNetwork.random(getkey(), (2, 3, 2, 1), bias=True)
    z = net.lift()
    loud = manifolds.ReLUPathMetric(net, max_steps=1)
    with pytest.raises(eqx.EquinoxRuntimeError):
        loud.recover(z)
    with pytest.raises(eqx.EquinoxRuntimeError):
        eqx.filter_jit(lambda m, z: m(z).as_matrix())(loud, z)
    quiet = manifolds.ReLUPathMetric(net, max_steps=1, throw=False)
    _, result = quiet.recover_with_result(z)
    assert result != manifolds.ReLURESULTS.successful
    _, result = eqx.filter_jit(lambda m, z: m.recover_with_result(z))(quiet, z)
    assert result != manifolds.ReLURESULTS.successful
    ok = manifolds.ReLUPathMetric(net, throw=False).recover_with_result(z)[1]
    assert ok == manifolds.ReLURESULTS.successful
    # RecoveredMetric: a one-step budget does not reach the fibre of a far z.
    lin = models.TwoLayerLinear.relaxed_balanced(getkey(), 2, 2, 2, -0.3)
    far = jax.tree.map(lambda x: 1.5 * x, lin.lift())
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        manifolds.RecoveredMetric(lin, max_steps=1).recover(far)
    res = manifolds.RecoveredMetric(lin, max_steps=1, throw=False).recover_with_result(far)[2]
    assert res == manifolds.RecoveredRESULTS.not_on_fibre


@pytest.mark.parametrize(
    "build",
    [
        lambda w: models.ReLUNetwork([w, jnp.ones((1, 3))]).lift(),
        lambda w: models.ReLUDAG(2, 1, 1, ((0, 2), (1, 2), (2, 3)), w[:, 0]).lift(),
        lambda w: models.LinearNeuralODE(w[None, :2, :2], num_steps=2).lift(),
    ],
)
def test_nan_parameters_raise_under_jit(build):
    good = jnp.ones((3, 2))
    eqx.filter_jit(build)(good)
    with pytest.raises(eqx.EquinoxRuntimeError, match="must have finite entries"):
        eqx.filter_jit(build)(good.at[0, 0].set(jnp.nan))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda w: models.TwoLayerLinear(U=w, V=jnp.ones((4, 2))), "`U`"),
        (lambda w: models.TwoLayerLinear(U=jnp.ones((4, 2)), V=w), "`V`"),
        (lambda w: models.DeepLinear([jnp.ones((2, 4)), w]), r"`weights\[1\]`"),
        (lambda w: models.DiagonalLinear([jnp.ones((3, 2)), w, w]), r"`factors\[1\]`"),
    ],
)
def test_nan_in_linear_factors_raises_under_jit(build, name):
    # The constructors keep the array that carries the traced check (check_finite's result).
    good = jnp.ones((3, 2))
    jax.block_until_ready(jax.jit(build)(good))
    message = name + " must have finite entries"
    with pytest.raises(eqx.EquinoxRuntimeError, match=message):
        jax.block_until_ready(eqx.filter_jit(lambda w: build(w).lift())(good.at[1, 0].set(jnp.nan)))
    # Under plain `jax.jit` the same check surfaces as JAX's runtime error (its class
    # depends on where the result is first read), with the message.
    with pytest.raises((RuntimeError, ValueError), match=message):
        jax.block_until_ready(jax.jit(build)(good.at[0, 1].set(jnp.inf)))


def test_neural_ode_default_adjoint_serves_induced_metric_and_grad(getkey):
    node = models.LinearNeuralODE.random(getkey(), 2, 1, num_steps=8)
    assert isinstance(node.adjoint, dfx.DirectAdjoint)
    g = jax.random.normal(getkey(), (2, 2))
    mv = eqx.filter_jit(lambda m: manifolds.induced_metric(m).mv(g))(node)
    jac = eqx.filter_jit(jax.jacfwd(lambda c: eqx.tree_at(lambda m: m.coeffs, node, c).lift()))(
        node.coeffs
    )
    J = jac.reshape(4, -1)
    assert np.allclose(mv.ravel(), J @ (J.T @ g.ravel()), rtol=1e-11, atol=1e-12)
    loss = lambda c, m: jnp.sum(g * eqx.tree_at(lambda x: x.coeffs, m, c).lift() ** 2)
    ref = eqx.filter_jit(jax.grad(loss))(node.coeffs, node)
    # Backsolve integrates the adjoint ODE backwards with the same 8 fixed steps: it
    # agrees to the discretisation error only.
    for adjoint, tol in ((dfx.RecursiveCheckpointAdjoint(), 1e-12), (dfx.BacksolveAdjoint(), 1e-2)):
        other = models.LinearNeuralODE(node.coeffs, adjoint=adjoint, num_steps=8)
        grad = eqx.filter_jit(jax.grad(loss))(other.coeffs, other)
        assert np.allclose(grad, ref, rtol=tol, atol=tol * float(jnp.max(jnp.abs(ref))))
    # ForwardMode: accepted, forward derivatives only.
    fwd = models.LinearNeuralODE(node.coeffs, adjoint=dfx.ForwardMode(), num_steps=8)
    jac_fwd = eqx.filter_jit(jax.jacfwd(lambda c: eqx.tree_at(lambda m: m.coeffs, fwd, c).lift()))(
        fwd.coeffs
    )
    assert np.allclose(jac_fwd, jac, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "adjoint, error",
    [("magic", ValueError), (dfx.DirectAdjoint, TypeError), (3, TypeError)],
)
def test_neural_ode_adjoint_refused_up_front(adjoint, error):
    with pytest.raises(error, match="adjoint"):
        models.LinearNeuralODE(jnp.zeros((1, 2, 2)), adjoint=adjoint)
    with pytest.raises(error, match="adjoint"):
        models.NeuralODE(2, 3, 1, key=jax.random.key(0), adjoint=adjoint)


def test_legacy_adjoint_names_warn():
    with pytest.warns(DeprecationWarning, match="DirectAdjoint"):
        node = models.LinearNeuralODE(jnp.zeros((1, 2, 2)), adjoint="direct")
    assert isinstance(node.adjoint, dfx.DirectAdjoint)


def test_path_metric_built_inside_jit_from_a_concrete_network(getkey):
    # The positive-definiteness check of the Gram matrix is a value check: inside an outer
    # jit it rides on the Cholesky state (eqx.error_if) instead of a host bool().
    net = models.ReLUNetwork.random(getkey(), (2, 3, 2, 1), bias=True)
    z = net.lift()
    g = jax.tree.map(lambda x: jax.random.normal(getkey(), x.shape), z)
    eager = _flat(manifolds.ReLUPathMetric(net)(z).mv(g))[0]
    jitted = _flat(jax.jit(lambda z: manifolds.ReLUPathMetric(net)(z).mv(g))(z))[0]
    assert jnp.linalg.norm(jitted - eager) <= 1e-12 * jnp.linalg.norm(eager)
