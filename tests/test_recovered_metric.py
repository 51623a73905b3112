import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
import manifolds
import models
from manifolds import induced_metric, intrinsic_metric
from manifolds._recovered_metric import FiberConsistency, RecoveredMetric, fiber_consistency

from .helpers import intrinsic_configs, quadratic_loss


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# One config per family and fiber type (finite for diagonal chains, O(r)-orbits, the large
# fibers of balanced r > n); the whole registry takes too long to compile here.
@pytest.mark.parametrize(
    "name", ["diagonal-depth3", "two-layer-2-2-4-pos", "two-layer-3-5-4-bal", "deep-square-L3"]
)
def test_equals_closed_form_on_the_level_set(name, getkey):
    # The builders draw independent points with the same conserved values: far from the
    # warm start θ₀, yet K(φ(θ)) must equal the closed form and the ground truth M(θ).
    build = intrinsic_configs[name]
    model = build(getkey())
    K, closed = RecoveredMetric(model), intrinsic_metric(model)
    for _ in range(2):
        other = build(getkey())
        z = other.lift()
        Kz = K(z).as_matrix()
        assert _rel(Kz, closed(z).as_matrix()) <= 1e-8
        assert _rel(Kz, induced_metric(other).as_matrix()) <= 1e-8
        theta, residual = K.recover(z)
        assert float(residual) <= 1e-9  # accepted up to ~1e-8; reached: ~1e-13, at most ~3e-11
        assert np.allclose(theta.lift(), z, atol=1e-10)
        laws = jax.tree.map(np.allclose, theta.conservation_laws(), model.conservation_laws())
        assert all(jax.tree.leaves(laws))


@pytest.mark.parametrize(
    "build",
    [
        lambda k: models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 2, 0.5),
        lambda k: models.DiagonalLinear.random(k, (3,), 2),  # diagonal: always intrinsic
    ],
    ids=["two-layer-relaxed", "diagonal-generic"],
)
def test_intrinsic_flow_reproduces_euclidean_flow(build, getkey):
    model = build(getkey())
    f = quadratic_loss(getkey(), jax.eval_shape(model.lift))
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    ts = jnp.linspace(0.0, 2.0, 5)
    euc = flows.euclidean_flow(
        model, f, 0.0, 2.0, saveat=flows.SaveAt(ts=ts, params=True), stepsize_controller=tight
    )
    K = RecoveredMetric(model)
    intr = flows.intrinsic_flow(
        K, f, 0.0, 2.0, model.lift(), saveat=flows.SaveAt(ts=ts), stepsize_controller=tight
    )
    assert euc.successful and intr.successful
    # The flow really moved (the comparison below is not vacuous).
    assert float(euc.losses[-1]) < float(euc.losses[0])
    assert float(jnp.max(jnp.abs(euc.zs[-1] - euc.zs[0]))) > 1e-3 * float(
        jnp.max(jnp.abs(euc.zs[0]))
    )
    assert float(jnp.max(flows.relative_deviation(euc, intr))) <= 1e-7
    # Along the Euclidean trajectory: K(φ(θ(t))) = M(θ(t)), the ground truth.
    assert float(euc.conservation_drift) <= 1e-9
    for i in (1, 4):
        M = induced_metric(jax.tree.map(lambda x, i=i: x[i], euc.params)).as_matrix()
        assert _rel(K(euc.zs[i]).as_matrix(), M) <= 1e-8
    # Re-centring the warm start (for long trajectories) keeps the level set and K.
    z_mid, z_end = intr.zs[2], intr.zs[-1]
    recentred = K.with_warm_start(K.recover(z_mid)[0])
    assert _rel(recentred(z_end).as_matrix(), K(z_end).as_matrix()) <= 1e-9


def test_fiber_consistency_holds_for_relaxed_balanced(getkey):
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 2, 2, 2, 0.5)
    result = fiber_consistency(model, key=getkey(), num_samples=6)
    assert isinstance(result, FiberConsistency)
    assert result.holds and result.residual <= 1e-9
    assert result.separation >= 0.05 and result.num_pairs >= 3
    # The fiber here is the orbit θ ↦ (UQ, VQ), Q orthogonal (QᵀλIQ = λI): the check
    # really compared distinct points of it.
    U0, V0 = model.U, model.V
    for U, V in zip(result.solutions.U[1:], result.solutions.V[1:]):
        Q = jnp.linalg.solve(U0, U)
        assert np.allclose(Q.T @ Q, np.eye(2), atol=1e-9)
        assert np.allclose(V, V0 @ Q, atol=1e-9)


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 2, 3)])
def test_fiber_consistency_fails_for_generic_two_layer(shape, getkey):
    # r <= max(n, m) and S = UᵀU − VᵀV not a multiple of I: not intrinsic (THEORY §3).
    model = models.TwoLayerLinear.random(getkey(), *shape)
    result = fiber_consistency(model, key=getkey(), num_samples=6)
    assert not result.holds and result.residual > 1e-3
    assert result.separation >= result.min_separation
    # ... although every solution compared is on the fiber.
    z, c = model.lift(), model.conservation_laws()
    for U, V in zip(result.solutions.U, result.solutions.V):
        assert np.allclose(U @ V.T, z, atol=1e-10)
        assert np.allclose(U.T @ U - V.T @ V, c, atol=1e-10)


def test_fiber_consistency_refuses_to_be_vacuous(getkey):
    # A diagonal fiber is a finite set: tiny perturbations all return to θ₀.
    model = models.DiagonalLinear.random(getkey(), (3,), 2)
    with pytest.raises(ValueError, match="vacuous"):
        fiber_consistency(model, key=getkey(), num_samples=2, perturbation=1e-6)
    with pytest.raises(ValueError, match="`perturbation` must be positive"):
        fiber_consistency(model, key=getkey(), perturbation=0.0)


def test_failed_solve_is_reported_not_used(getkey):
    # r = 1: a full-rank 2x2 z is outside what the level set reaches.
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 2, 1, 2, 0.5)
    z_bad = model.lift() + 0.5 * jnp.eye(2)
    K = RecoveredMetric(model)
    # One failure channel (the result code's error_if), eager or jitted.
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        K(z_bad)
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        K.recover(z_bad)
    jitted = eqx.filter_jit(lambda z: K(z).as_matrix())
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        jitted(z_bad)
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        jitted(z_bad.at[0, 0].set(jnp.nan))  # traced: only the residual can tell
    f = lambda z, args: 0.5 * jnp.sum((z - jnp.eye(2)) ** 2)
    with pytest.raises(eqx.EquinoxRuntimeError, match="no theta with phi"):
        flows.intrinsic_flow(K, f, 0.0, 1.0, z_bad)  # inside diffrax's compiled loop too
    with pytest.raises(ValueError, match="`z` must be finite"):
        K(z_bad.at[0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="`z` must be shaped like"):
        K(jnp.zeros((2, 3)))
    # throw=False: NaN, never a wrong metric; recover hands back the residual.
    quiet = RecoveredMetric(model, throw=False)
    assert np.all(np.isnan(quiet(z_bad).as_matrix()))
    assert float(quiet.recover(z_bad)[1]) > 1e-3
    assert quiet.recover_with_result(z_bad)[2] == manifolds.RecoveredRESULTS.not_on_fibre
    assert np.all(np.isfinite(quiet(model.lift()).as_matrix()))


def test_under_vmap_and_options(getkey):
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 2, 2, 2, -0.3)
    K = RecoveredMetric(model)
    g = jax.random.normal(getkey(), (3, 2, 2))
    out = jax.vmap(lambda gi: K(model.lift()).mv(gi))(g)
    M = induced_metric(model)
    for gi, oi in zip(g, out):
        assert np.allclose(oi, M.mv(gi), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="model"):
        RecoveredMetric(jnp.ones(3))
    with pytest.raises(ValueError, match="`rtol` must be positive"):
        RecoveredMetric(model, rtol=0.0)
    with pytest.raises(TypeError, match="solver"):
        RecoveredMetric(model, solver="lm")
    with pytest.raises(ValueError, match="structure and shapes"):
        K.with_warm_start(models.TwoLayerLinear.random(getkey(), 2, 3, 2))
