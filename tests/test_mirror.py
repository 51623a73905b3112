import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import manifolds
import models
from manifolds._mirror import MirrorFlowResult, mirror_flow_test
from manifolds._recovered_metric import RecoveredMetric


def test_diagonal_chain_is_a_mirror_flow(getkey):
    # K(z) = diag(√(4z² + δ²)): g = K⁻¹ is the Hessian of the hyperbolic entropy
    # ψ(z) = Σ z/2 · arcsinh(2z/|δ|) − √(4z² + δ²)/4.
    delta = jnp.array([0.5, -1.0, 2.0])
    K = manifolds.DiagonalChainMetric(delta[None])
    psi = lambda z: jnp.sum(
        z / 2 * jnp.arcsinh(2 * z / jnp.abs(delta)) - jnp.sqrt(4 * z**2 + delta**2) / 4
    )
    for _ in range(2):
        z = jax.random.normal(getkey(), (3,))
        result = mirror_flow_test(K, z)
        assert isinstance(result, MirrorFlowResult)
        assert result.holds and result.residual <= 1e-12
        assert np.allclose(jnp.linalg.inv(K(z).as_matrix()), jax.hessian(psi)(z), rtol=1e-12)
    # Deeper chains too: each coordinate's g depends on that coordinate only.
    K3 = manifolds.DiagonalChainMetric(jnp.array([[0.5, -1.0, 2.0], [0.2, 0.3, -0.5]]))
    assert mirror_flow_test(K3, jnp.array([0.3, -1.2, 2.0])).holds


def test_constructed_hessian_metric_passes(getkey):
    # A non-diagonal Hessian metric: g = ∇²ψ with ψ = logsumexp(z) + ½‖z‖² + (z₀ + z₁)⁴/4,
    # strictly convex so that g is positive definite at every z.
    psi = lambda z: jax.nn.logsumexp(z) + 0.5 * jnp.sum(z**2) + (z[0] + z[1]) ** 4 / 4
    K = lambda z: lx.MatrixLinearOperator(jnp.linalg.inv(jax.hessian(psi)(z)), lx.symmetric_tag)
    result = mirror_flow_test(K, jax.random.normal(getkey(), (3,)))
    assert result.holds and result.residual <= 1e-12


def test_constructed_non_hessian_metric_fails():
    # g = [[1, z₀], [z₀, 1 + z₀²]] (det 1, positive definite): ∂₀g₀₁ = 1 but ∂₁g₀₀ = 0.
    def K(z):
        a = z[0]
        return lx.MatrixLinearOperator(jnp.array([[1 + a**2, -a], [-a, 1.0]]), lx.symmetric_tag)

    result = mirror_flow_test(K, jnp.array([0.3, 0.1]))
    assert not result.holds
    assert np.isclose(result.residual, 1.0)  # max|∂g| = 1 and the asymmetry is 1


def _two_layer_K_numpy(Z, lam):
    # Independent of the library: K = (ZZᵀ + λ²/4)^½ ⊗ I + I ⊗ (ZᵀZ + λ²/4)^½ (row-major).
    def sqrtm(S):
        w, v = np.linalg.eigh(S)
        return (v * np.sqrt(w)) @ v.T

    n, m = Z.shape
    A = sqrtm(Z @ Z.T + lam**2 / 4 * np.eye(n))
    B = sqrtm(Z.T @ Z + lam**2 / 4 * np.eye(m))
    return np.kron(A, np.eye(m)) + np.kron(np.eye(n), B)


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_two_layer_matrix_case_is_not_a_mirror_flow(lam, getkey):
    # n = m = r = 2 (relaxed) balanced: g = K⁻¹ is not a Hessian metric (UVᵀ is not a
    # commuting parametrization), confirmed by central finite differences of an
    # independent numpy K.
    K = manifolds.TwoLayerLinearMetric(lam, 2)
    P, Q = (jnp.linalg.qr(jax.random.normal(getkey(), (2, 2)))[0] for _ in range(2))
    sigma = jax.random.uniform(getkey(), (2,), minval=0.5, maxval=2.0)
    Z = np.asarray((P * sigma[None, :]) @ Q.T)  # well conditioned: the asymmetry is ≈ 0.2–0.3
    result = mirror_flow_test(K, jnp.asarray(Z))
    assert not result.holds and result.residual > 0.1
    g = lambda x: np.linalg.inv(_two_layer_K_numpy(x.reshape(2, 2), lam))
    h = 1e-5
    E = np.eye(4)
    dg = np.stack([(g(Z.ravel() + h * e) - g(Z.ravel() - h * e)) / (2 * h) for e in E], axis=-1)
    fd = np.max(np.abs(dg - np.swapaxes(dg, 1, 2))) / np.max(np.abs(dg))
    assert abs(fd - result.residual) <= 1e-5 * result.residual
    # The scalar case n = m = r = 1 is one-dimensional, hence trivially Hessian.
    assert mirror_flow_test(manifolds.TwoLayerLinearMetric(lam, 1), jnp.array([[0.7]])).holds


def test_recovered_metric_is_differentiable(getkey):
    # ∂K through the nonlinear solve (implicit function theorem) gives the same answer as
    # the closed forms.
    diag = models.DiagonalLinear.random(getkey(), (3,), 2)
    assert mirror_flow_test(RecoveredMetric(diag), diag.lift()).holds
    two = models.TwoLayerLinear.balanced(getkey(), 2, 2, 2)
    recovered = mirror_flow_test(RecoveredMetric(two), two.lift())
    closed = mirror_flow_test(manifolds.intrinsic_metric(two), two.lift())
    assert not recovered.holds
    assert abs(recovered.residual - closed.residual) <= 1e-8 * closed.residual


def test_errors():
    K = manifolds.TwoLayerLinearMetric(0.0, 2)
    # Rank-1 Z: the balanced K has the eigenvalue σ₂ + σ₂ = 0.
    with pytest.raises(ValueError, match="smallest eigenvalue"):
        mirror_flow_test(K, jnp.array([[1.0, 2.0], [2.0, 4.0]]))
    skew = lambda z: lx.MatrixLinearOperator(jnp.array([[1.0, z[0]], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="must be symmetric"):
        mirror_flow_test(skew, jnp.array([0.5, 0.0]))
    with pytest.raises(TypeError, match="K"):
        mirror_flow_test("K", jnp.zeros(2))
    with pytest.raises(TypeError, match="z"):
        mirror_flow_test(K, jnp.zeros((2, 2), jnp.int32))
