"""Accuracy of the closed forms where implicit-bias research lives: small and large scales,
rank-deficient z (bottlenecks), repeated roots of the diagonal chain.

The reference is the induced metric M = JJᵀ with J built by `jax.jacfwd` (helpers), which
is exact to rounding at every point; K must agree with it to a small multiple of ε relative
to ‖M‖, whatever the scale.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifolds
import models

from .helpers import dense_jacobian

EPS = float(jnp.finfo(jnp.float64).eps)


def _relative_error(model):
    K = manifolds.intrinsic_metric(model)
    J = dense_jacobian(model)
    M = J @ J.T
    Kz = K(model.lift()).as_matrix()
    return float(jnp.max(jnp.abs(Kz - M)) / jnp.max(jnp.abs(M)))


@pytest.mark.parametrize(
    "widths", [(3, 3, 1, 3, 3, 3), (3, 3, 1, 3), (2, 4, 1, 4, 2), (4, 2, 2, 4)]
)
def test_deep_balanced_with_a_bottleneck_is_accurate(widths, getkey):
    # rank Z = 1 (or 2) < min(n_0, n_L): the zero singular values are structural, not
    # rounding noise raised to the powers 2(L-j)/L < 1 (which gave 3e8 ε at L = 5).
    model = models.DeepLinear.balanced(getkey(), widths)
    assert _relative_error(model) <= 1e3 * EPS


@pytest.mark.parametrize(
    "build",
    [
        lambda k: models.TwoLayerLinear.relaxed_balanced(k, 3, 2, 4, 0.5),
        lambda k: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 3, -0.5),
        lambda k: models.TwoLayerLinear.balanced(k, 2, 3, 4),
        lambda k: models.DeepLinear.balanced(k, (3, 3, 1, 3)),
        lambda k: models.DeepLinear.relaxed_balanced(k, (3, 3, 3, 3), (0.5, -0.3)),
        lambda k: models.DiagonalLinear.relaxed_balanced(k, (4,), 3, (0.5, -1.0)),
    ],
    ids=[
        "two-layer-pos",
        "two-layer-neg",
        "two-layer-balanced",
        "deep-bottleneck",
        "deep-square",
        "diagonal",
    ],
)
def test_same_verdict_and_accuracy_at_every_scale(build, getkey):
    # The same init scaled by 1e-6 ... 1e6 (θ → sθ keeps every level set a level set of
    # the scaled problem): accepted, and K = M to the same relative accuracy.
    model = build(getkey())
    errors = {
        scale: _relative_error(jax.tree.map(lambda x, s=scale: s * x, model))
        for scale in (1e-6, 1e-3, 1.0, 1e3, 1e6)
    }
    print("K vs JJᵀ in units of ε at scales", {s: round(e / EPS, 1) for s, e in errors.items()})
    assert max(errors.values()) <= 1e3 * EPS, errors


@pytest.mark.parametrize("delta", [1e-4, 1e-8, 1e-12])
@pytest.mark.parametrize("small", [1e-8, 1e-4])
def test_diagonal_chain_near_a_repeated_root(delta, small, getkey):
    # u_1² tiny, u_2² = u_1² + 1, u_3² = u_1² + δ: Λ = (0, 1, δ), a near-double root of p at
    # x = 0. Through λ's cumulative sums the factor u_3² = x + Λ_2 loses its digits (3e11 ε
    # measured); in the offsets c_k = u_k² - min u_l² it keeps them.
    u1 = small * (1.0 + jax.random.uniform(getkey(), (3,)))
    u2 = jnp.sqrt(u1**2 + 1.0)
    u3 = jnp.sqrt(u1**2 + delta)
    model = models.DiagonalLinear([u1, u2, u3])
    assert _relative_error(model) <= 1e3 * EPS


def test_offsets_from_lams_and_from_squares_agree(getkey):
    model = models.DiagonalLinear.relaxed_balanced(getkey(), (3,), 4, (0.5, -1.0, 0.25))
    from_lams = manifolds.DiagonalChainMetric(model.conservation_laws())
    from_squares = manifolds.DiagonalChainMetric(squares=jnp.stack([u**2 for u in model.factors]))
    np.testing.assert_allclose(from_lams.offsets, from_squares.offsets, rtol=0, atol=1e-14)
    with pytest.raises(TypeError, match="exactly one of `lams` and `squares`"):
        manifolds.DiagonalChainMetric()


def test_projector_branch_below_rank_r_raises(getkey):
    # λ > 0 and r = 2 < n = 3: K needs rank z = 2. At a rank-1 z it raises (also under
    # jit) instead of returning a projector onto rounding noise.
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 3, 2, 5, 0.7)
    K = manifolds.intrinsic_metric(model)
    z = jnp.outer(jax.random.normal(getkey(), (3,)), jax.random.normal(getkey(), (5,)))
    g = jnp.ones_like(z)
    with pytest.raises(Exception, match="numerically of lower rank"):
        jax.block_until_ready(K(z).mv(g))
    with pytest.raises(Exception, match="numerically of lower rank"):
        jax.block_until_ready(eqx.filter_jit(lambda K, z: K(z).mv(g))(K, z))
    assert bool(jnp.all(jnp.isfinite(K(model.lift()).mv(g))))  # rank 2: fine
