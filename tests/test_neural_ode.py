"""Linear neural ODEs: the depth solve, its adjoints, the induced metric, the laws."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import legendre
from scipy.integrate import solve_ivp

import manifolds
import models
from models._linear_neural_ode import gauss_legendre, legendre_basis


def _basis_numpy(s, size):
    # An independent evaluation of e_k(s) = √(2k+1) P_k(2s − 1).
    return np.stack(
        [np.sqrt(2 * k + 1) * legendre.Legendre.basis(k)(2 * s - 1) for k in range(size)]
    )


def _transitions(coeffs, nodes):
    """R(s) = Φ(s, 0) at `nodes` and R(1), with SciPy's DOP853 (independent of diffrax)."""
    coeffs = np.asarray(coeffs)
    size, n, _ = coeffs.shape

    def rhs(s, y):
        A = np.tensordot(_basis_numpy(np.asarray(s), size), coeffs, axes=1)
        return (A @ y.reshape(n, n)).ravel()

    ts = np.concatenate([nodes, [1.0]])
    sol = solve_ivp(
        rhs, (0.0, 1.0), np.eye(n).ravel(), method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts
    )
    R = sol.y.T.reshape(-1, n, n)
    return R[:-1], R[-1]


def test_legendre_basis_is_orthonormal():
    nodes, weights = gauss_legendre(20)
    E = jax.vmap(lambda s: legendre_basis(s, 8))(jnp.asarray(nodes))
    gram = np.einsum("q,qk,ql->kl", weights, E, E)
    assert np.allclose(gram, np.eye(8), atol=1e-13)
    assert np.allclose(E.T, _basis_numpy(nodes, 8), atol=1e-12)


def test_adjoint_gradients_agree_with_each_other_and_finite_differences(getkey):
    model = models.LinearNeuralODE.random(getkey(), 3, 3, rtol=1e-12, atol=1e-12, max_steps=256)
    G = jax.random.normal(getkey(), (3, 3))

    def g(coeffs, m):
        return jnp.sum(G * eqx.tree_at(lambda x: x.coeffs, m, coeffs).lift())

    grads = {}
    for name, adjoint in (
        ("recursive_checkpoint", dfx.RecursiveCheckpointAdjoint()),
        ("direct", dfx.DirectAdjoint()),
        ("backsolve", dfx.BacksolveAdjoint()),
    ):
        m = models.LinearNeuralODE(
            model.coeffs, adjoint=adjoint, rtol=1e-12, atol=1e-12, max_steps=256
        )
        grads[name] = eqx.filter_jit(jax.grad(g))(m.coeffs, m)
    value = eqx.filter_jit(g)
    h = 2e-5
    directions = jax.random.normal(getkey(), (4,) + model.coeffs.shape)
    fd = np.array(
        [
            (value(model.coeffs + h * v, model) - value(model.coeffs - h * v, model)) / (2 * h)
            for v in directions
        ]
    )
    scale = np.max(np.abs(fd))
    ref = grads["recursive_checkpoint"]
    report = {}
    for name, grad in grads.items():
        ad = np.array([jnp.vdot(grad, v) for v in directions])
        report[name] = (
            float(np.max(np.abs(ad - fd)) / scale),
            float(jnp.max(jnp.abs(grad - ref)) / jnp.max(jnp.abs(ref))),
        )
    print("adjoint: (vs central differences, vs RecursiveCheckpointAdjoint)", report)
    for name, (vs_fd, _) in report.items():
        assert vs_fd <= 1e-7, (name, vs_fd)
    assert report["direct"][1] <= 1e-13
    assert report["backsolve"][1] <= 1e-9  # the adjoint ODE is solved to rtol = 1e-12


def test_induced_metric_equals_quadrature(getkey):
    # A fixed A(s) of degree 2, carried by bases of growing degree p. The model's metric
    # is the Galerkin one, M_p = ∂φ P_p ∂φᵀ: checked exactly against SciPy transition
    # matrices; it tends to the function-space M(A)[X] = ∫ Φ(1,s)Φ(1,s)ᵀ X Φ(s,0)ᵀΦ(s,0) ds.
    n = 2
    base = models.LinearNeuralODE.random(getkey(), n, 2).coeffs
    X = jax.random.normal(getkey(), (n, n))
    nodes, weights = gauss_legendre(40)
    R, R1 = _transitions(base, nodes)
    left = R1 @ np.linalg.inv(R)  # Φ(1, s)
    Xn = np.asarray(X)
    continuum = np.einsum("q,qij,qkj,kl,qml,qmp->ip", weights, left, left, Xn, R, R)
    mv = eqx.filter_jit(lambda m, x: manifolds.induced_metric(m).mv(x))
    errors = []
    for degree in (2, 5, 8):
        coeffs = jnp.zeros((degree + 1, n, n)).at[:3].set(base)
        model = models.LinearNeuralODE(
            coeffs, adjoint=dfx.DirectAdjoint(), rtol=1e-12, atol=1e-12, max_steps=256
        )
        MX = np.asarray(mv(model, X))
        E = _basis_numpy(nodes, degree + 1)  # (K, Q)
        # ∂φᵀX, coefficient by coefficient, then ∂φ of it.
        G = np.einsum("q,kq,qji,jl,qml->kim", weights, E, left, Xn, R)
        galerkin = np.einsum("q,kq,qij,kjl,qlm->im", weights, E, left, G, R)
        assert np.max(np.abs(MX - galerkin)) <= 1e-9 * np.max(np.abs(galerkin))
        errors.append(np.max(np.abs(MX - continuum)) / np.max(np.abs(continuum)))
    print("basis size, |M_p X - M X| / |M X|:", list(zip((3, 6, 9), errors)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= 1e-6


def test_relaxed_balanced_laws(getkey):
    key = getkey()
    grid = jnp.linspace(0.0, 1.0, 33)
    residuals = []
    for degree in (4, 10):
        model = models.LinearNeuralODE.relaxed_balanced(key, 3, degree=degree, lam=0.7)
        H = model.conservation_laws(grid)
        assert H.shape == (33, 3, 3) and np.allclose(H, jnp.swapaxes(H, 1, 2), atol=1e-12)
        exact = float(jnp.max(jnp.linalg.norm(H - 0.7 * jnp.eye(3)[None], axis=(1, 2))))
        measured = float(model.balance_residual(grid))
        # tr H / n recovers λ: the residual against the true λ is the measured one.
        assert measured <= exact * (1 + 1e-12) and exact <= 1.5 * measured + 1e-9
        residuals.append(measured)
    print("degree 4, 10: max_s |H(s) - λI| =", residuals)
    assert residuals[0] > 100 * residuals[1]
    # λ may depend on s; W is carried exactly (degree 1), S is projected.
    model = models.LinearNeuralODE.relaxed_balanced(
        key, 2, degree=14, lam=lambda s: 0.3 + jnp.sin(3 * s), scale=0.5, skew_scale=0.5
    )
    H = model.conservation_laws(grid)
    lam = 0.3 + jnp.sin(3 * grid)
    assert float(jnp.max(jnp.abs(H - lam[:, None, None] * jnp.eye(2)[None]))) <= 1e-8


def test_from_neural_ode_converges_at_first_order(getkey):
    model = models.LinearNeuralODE.random(getkey(), 3, 3, scale=2.0, rtol=1e-12, atol=1e-12)
    z = model.lift()
    # Depths in the asymptotic range: over 40 draws the fitted order is 0.87-1.07 for
    # L = 16..64 (the O(1/L²) term still shows) and 0.97-1.01 for L = 64..256.
    depths = np.array([64, 128, 256])
    errors = []
    for L in depths:
        deep = models.DeepLinear.from_neural_ode(model, int(L))
        assert deep.depth == L and deep.widths == (3,) * (L + 1)
        errors.append(float(jnp.linalg.norm(deep.lift() - z) / jnp.linalg.norm(z)))
    order = -np.polyfit(np.log(depths), np.log(errors), 1)[0]
    print("L, |W_L...W_1 - z| / |z|:", list(zip(depths.tolist(), errors)), "order", order)
    assert 0.9 <= order <= 1.1
    # The deep laws are the ODE's, scaled: h_k = H(k/L)/L² + O(L⁻³).
    L = 64
    deep = models.DeepLinear.from_neural_ode(model, L)
    h = jnp.stack(deep.conservation_laws()) * L**2
    H = model.conservation_laws(jnp.arange(1, L) / L)
    assert float(jnp.max(jnp.abs(h - H)) / jnp.max(jnp.abs(H))) <= 20 / L


def test_lift_under_vmap_and_grad(getkey):
    # det R(1) = exp ∫ tr A = exp(tr c_0) (only e_0 = 1 has a nonzero mean), so
    # ∂ det z / ∂c_0 = det z · I and ∂ det z / ∂c_k = 0 for k ≥ 1.
    coeffs = 0.5 * jax.random.normal(getkey(), (4, 3, 2, 2))

    def det(c):
        # A tight depth solve: the gradient of an adaptive solve is accurate to about its
        # tolerance (measured: 1.3e-10 off the diagonal at the default 1.5e-10 for one
        # CI draw, 8e-13 at 1e-12), and the checks below ask for 1e-10.
        z = models.LinearNeuralODE(c, rtol=1e-12, atol=1e-12).lift()
        return jnp.linalg.det(z), z

    (dets, zs), grads = jax.jit(jax.vmap(jax.value_and_grad(det, has_aux=True)))(coeffs)
    assert zs.shape == (4, 2, 2)
    assert np.allclose(dets, jnp.linalg.det(zs), rtol=1e-12)
    assert np.allclose(dets, jnp.exp(jnp.trace(coeffs[:, 0], axis1=1, axis2=2)), rtol=1e-9)
    expected = dets[:, None, None] * jnp.eye(2)[None]
    assert np.allclose(grads[:, 0], expected, rtol=1e-8, atol=1e-10)
    assert np.allclose(grads[:, 1:], 0.0, atol=1e-8)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: models.LinearNeuralODE(jnp.zeros((3, 2, 3))), ValueError, "square"),
        (lambda: models.LinearNeuralODE(jnp.zeros((2, 2))), ValueError, "degree \\+ 1, n, n"),
        (lambda: models.LinearNeuralODE(jnp.full((1, 2, 2), jnp.nan)), ValueError, "finite"),
        (lambda: models.LinearNeuralODE.random(jax.random.key(0), 2, -1), ValueError, "degree"),
        # A float degree: the `int` annotation's TypeError in tests, a ValueError without.
        (
            lambda: models.LinearNeuralODE.random(jax.random.key(0), 2, 1.5),
            (TypeError, ValueError),
            "degree",
        ),
        (
            lambda: models.LinearNeuralODE.relaxed_balanced(jax.random.key(0), 2, degree=-2),
            ValueError,
            "degree",
        ),
        (
            lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), adjoint="magic"),
            ValueError,
            "Unknown `adjoint`",
        ),
        # Adjoints are objects: a class (not an instance) is refused up front.
        (
            lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), adjoint=dfx.DirectAdjoint),
            TypeError,
            "adjoint",
        ),
        (
            lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), solver=dfx.Euler()),
            ValueError,
            "num_steps",
        ),
        (lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), solver="tsit5"), TypeError, "solver"),
        (lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), rtol=-1.0), ValueError, "rtol"),
        (
            lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), num_steps=0),
            ValueError,
            "num_steps",
        ),
        (
            lambda: models.LinearNeuralODE(jnp.zeros((1, 2, 2)), s_grid=[0.5, 2.0]),
            ValueError,
            "s_grid",
        ),
        (
            lambda: models.DeepLinear.from_neural_ode(
                models.LinearNeuralODE(jnp.zeros((1, 2, 2))), 1
            ),
            ValueError,
            "at least 2",
        ),
        (lambda: models.DeepLinear.from_neural_ode("ode", 4), TypeError, "LinearNeuralODE"),
    ],
)
def test_bad_inputs(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_fixed_steps_and_depth_grid(getkey):
    model = models.LinearNeuralODE.random(getkey(), 2, 2)
    fixed = models.LinearNeuralODE(model.coeffs, solver=dfx.Euler(), num_steps=4096)
    # Euler is first order: 4096 steps give about 1e-4 relative accuracy.
    assert np.allclose(fixed.lift(), model.lift(), rtol=1e-3, atol=1e-3)
    R = model.transition_matrices(jnp.array([0.0, 0.5, 1.0]))
    assert np.allclose(R[0], jnp.eye(2)) and np.allclose(R[-1], model.lift(), atol=1e-12)
    assert models.LinearNeuralODE(model.coeffs, s_grid=5).conservation_laws().shape == (5, 2, 2)
