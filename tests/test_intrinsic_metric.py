import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import manifolds
import models
from manifolds._chain import chain_root

from .helpers import intrinsic_configs


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_K_equals_M_on_the_level_set(name, getkey):
    # K is built from one init and evaluated at other points of the same level set
    # (same conserved values, drawn independently): K(φ(θ)) = M(θ) for all of them.
    build = intrinsic_configs[name]
    K = manifolds.intrinsic_metric(build(getkey()))
    for _ in range(3):
        other = build(getkey())
        M = manifolds.induced_metric(other).as_matrix()
        Kz = K(other.lift())
        assert lx.is_symmetric(Kz) and lx.is_positive_semidefinite(Kz)
        err = np.max(np.abs(Kz.as_matrix() - M)) / np.max(np.abs(M))
        assert err <= 1e-12, err


def test_reference_values_theory_section_4():
    U = jnp.diag(jnp.array([2.0, jnp.sqrt(2.0)]))
    V = jnp.diag(jnp.array([jnp.sqrt(3.0), 1.0]))
    model = models.TwoLayerLinear(U, V)
    assert np.allclose(model.conservation_laws(), np.eye(2))
    Z = model.lift()
    assert np.allclose(Z, np.diag([2 * np.sqrt(3), np.sqrt(2)]))
    K = manifolds.intrinsic_metric(model)(Z)
    E = np.eye(4).reshape(4, 2, 2)
    for e, value in zip(E, [7.0, 5.0, 5.0, 3.0]):
        assert np.allclose(K.mv(e), value * e, atol=1e-13)


def test_scalar_uv_reference():
    # (u, v) = (2, 1): z = 2, δ = v² − u² = −3, K = √(4z² + δ²) = 5.
    model = models.DiagonalLinear([jnp.array(2.0), jnp.array(1.0)])
    K = manifolds.intrinsic_metric(model)(model.lift())
    assert np.allclose(K.as_matrix(), 5.0, atol=1e-14)


@pytest.mark.parametrize("levels", [(0.0, 0.7), (0.0, -1.0, 0.5), (0.0, 2.0, -1.0, 0.3)])
def test_chain_root_against_numpy_roots(levels):
    levels = jnp.asarray(levels)
    s = jnp.array([0.0, 1e-8, 0.3, 4.0, 1e4])
    x = chain_root(s, levels)
    poly = np.poly(-np.asarray(levels))  # ∏ (x + Λ_k)
    x_min = max(0.0, float(np.max(-np.asarray(levels))))
    for si, xi in zip(np.asarray(s), np.asarray(x)):
        roots = np.roots(poly - np.r_[np.zeros(len(poly) - 1), si])
        real = roots[np.abs(roots.imag) < 1e-9].real
        expected = np.max(real[real >= x_min - 1e-12])
        assert abs(xi - expected) <= 1e-10 * max(1.0, abs(expected))
    assert np.all(x >= x_min)


def test_small_singular_values_keep_their_digits(getkey):
    # Balanced Z with singular values (1, 1e-9). K's small-small entry is 2σ₂ = 2e-9.
    # From the SVD of Z it is accurate to ε‖Z‖ absolute (1e-7 relative here); through an
    # eigendecomposition of ZZᵀ, σ₂² = 1e-18 drowns in rounding of size ε‖Z‖² and the
    # square root is off by up to √ε‖Z‖ ≈ 1e-8 — several times the value itself.
    s = jnp.array([1.0, 1e-9])
    P = jnp.linalg.qr(jax.random.normal(getkey(), (2, 2)))[0]
    Q = jnp.linalg.qr(jax.random.normal(getkey(), (2, 2)))[0]
    W = jnp.linalg.qr(jax.random.normal(getkey(), (2, 2)))[0]
    model = models.TwoLayerLinear(P * jnp.sqrt(s)[None, :] @ W.T, Q * jnp.sqrt(s)[None, :] @ W.T)
    Z = model.lift()
    K = manifolds.intrinsic_metric(model)(Z)
    E = jnp.outer(P[:, 1], Q[:, 1])  # the small-small direction
    k_small = jnp.vdot(E, K.mv(E))
    assert abs(k_small - 2e-9) <= 1e-5 * 2e-9
    # The induced metric agrees to the same accuracy.
    m_small = jnp.vdot(E, manifolds.induced_metric(model).mv(E))
    assert abs(k_small - m_small) <= 1e-5 * 2e-9
    # The naive route really is worse: the check above can fail.
    evals, evecs = jnp.linalg.eigh(Z @ Z.T)
    root = evecs @ jnp.diag(jnp.sqrt(jnp.abs(evals))) @ evecs.T
    evals_r, evecs_r = jnp.linalg.eigh(Z.T @ Z)
    root_r = evecs_r @ jnp.diag(jnp.sqrt(jnp.abs(evals_r))) @ evecs_r.T
    naive = jnp.vdot(E, root @ E + E @ root_r)
    # Its error is O(√ε‖Z‖) (it varies with the draw): far outside the tolerance above.
    assert abs(naive - 2e-9) > 100 * 1e-5 * 2e-9


def test_rejects_unbalanced_two_layer(getkey):
    model = models.TwoLayerLinear.random(getkey(), 3, 2, 4)
    with pytest.raises(
        ValueError, match=r"relaxed-balanced.*Measured \|\|U\^T U - V\^T V - lam I\|\|_F = "
    ):
        manifolds.intrinsic_metric(model)


def test_rejects_unbalanced_deep(getkey):
    model = models.DeepLinear.random(getkey(), (3, 3, 3))
    with pytest.raises(ValueError, match=r"every hidden layer j.*Measured \|\|h_j - lam_j I"):
        manifolds.intrinsic_metric(model)


def test_rejects_relaxed_non_square_deep(getkey):
    model = models.DeepLinear.relaxed_balanced(getkey(), (2, 3, 4), 0.5)
    with pytest.raises(ValueError, match="square widths"):
        manifolds.intrinsic_metric(model)


def test_rejects_projector_case_without_rank_r(getkey):
    # λ > 0, r < n but r > m: rank Z <= m < r, so range U cannot be read off Z.
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 4, 3, 2, 0.5)
    with pytest.raises(ValueError, match="rank Z = r"):
        manifolds.intrinsic_metric(model)


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_intrinsic_metric_under_jit_and_vmap(name, getkey):
    # The dispatcher itself is trace-safe: jit gives the eager metric, and filter_vmap over
    # a batch of inits on different level sets gives each one's metric.
    build = intrinsic_configs[name]
    model = build(getkey())
    eager = manifolds.intrinsic_metric(model)
    jitted = eqx.filter_jit(manifolds.intrinsic_metric)(model)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        assert jnp.linalg.norm(a - b) <= 1e-12 * jnp.linalg.norm(b)
    models_ = [build(k) for k in jax.random.split(getkey(), 3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *models_)
    batched = eqx.filter_vmap(manifolds.intrinsic_metric)(stacked)
    for i, m in enumerate(models_):
        one = manifolds.intrinsic_metric(m)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            assert jnp.linalg.norm(a[i] - b) <= 1e-12 * jnp.linalg.norm(b)


@pytest.mark.parametrize(
    "build",
    [
        lambda k: models.TwoLayerLinear.random(k, 3, 2, 4),
        lambda k: models.DeepLinear.random(k, (3, 3, 3)),
        lambda k: models.DeepLinear.relaxed_balanced(k, (2, 3, 4), 0.5),
        lambda k: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 2, 0.5),
    ],
    ids=["unbalanced-two-layer", "unbalanced-deep", "relaxed-non-square-deep", "projector-rank"],
)
def test_outside_the_domain_raises_under_jit(build, getkey):
    model = build(getkey())
    with pytest.raises(eqx.EquinoxRuntimeError, match="closed form|closed-form|intrinsic metric"):
        jax.block_until_ready(jax.tree.leaves(eqx.filter_jit(manifolds.intrinsic_metric)(model)))


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3])
def test_balance_check_is_scale_invariant(scale, getkey):
    # The residual is compared with ||U||² + ||V||²: an unbalanced init is rejected and a
    # balanced one accepted at every scale (small initializations included).
    key = getkey()
    bad = jax.tree.map(lambda x: scale * x, models.TwoLayerLinear.random(key, 3, 2, 4))
    good = jax.tree.map(
        lambda x: scale * x, models.TwoLayerLinear.relaxed_balanced(key, 3, 3, 3, 0.5)
    )
    with pytest.raises(ValueError, match="relaxed-balanced"):
        manifolds.intrinsic_metric(bad)
    K = manifolds.intrinsic_metric(good)
    assert abs(K.lam - 0.5 * scale**2) <= 1e-12 * scale**2
    deep = jax.tree.map(lambda x: scale * x, models.DeepLinear.random(key, (3, 3, 3)))
    with pytest.raises(ValueError, match="relaxed-balanced"):
        manifolds.intrinsic_metric(deep)


def test_unregistered_factorization():
    class Sum(models.AbstractFactorization):
        a: jax.Array

        def lift(self):
            return jnp.sum(self.a)

        def conservation_laws(self):
            return jnp.zeros(0)

    with pytest.raises(TypeError, match="No closed-form intrinsic metric is registered for Sum"):
        manifolds.intrinsic_metric(Sum(jnp.ones(3)))


def test_rtol_controls_acceptance(getkey):
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 3, 3, 3, 0.5)
    nudged = models.TwoLayerLinear(model.U.at[0, 0].add(1e-6), model.V)
    with pytest.raises(ValueError):
        manifolds.intrinsic_metric(nudged)
    manifolds.intrinsic_metric(nudged, rtol=1e-4)


def test_K_under_jit_and_vmap(getkey):
    model = models.DeepLinear.relaxed_balanced(getkey(), (3, 3, 3, 3), (0.5, -0.3))
    K = manifolds.intrinsic_metric(model)
    z = model.lift()
    g = jax.random.normal(getkey(), (5, 3, 3))
    out = jax.jit(jax.vmap(lambda gi: K(z).mv(gi)))(g)
    M = manifolds.induced_metric(model)
    for gi, oi in zip(g, out):
        assert np.allclose(oi, M.mv(gi), rtol=1e-11, atol=1e-12)
