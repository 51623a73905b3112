"""Exact polynomial conservation laws and the symbolic induced metric (`manifolds._symbolic`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

import manifolds
import models
from manifolds._symbolic import (
    MAX_METRIC_SIZE,
    MAX_MONOMIALS,
    PolynomialConservationLaws,
    polynomial_conservation_laws,
    symbolic_induced_metric,
)

from .helpers import all_factorizations, dense_jacobian


class _Affine(models.AbstractFactorization):
    # φ = (uv + u)/3: rational coefficients and an inhomogeneous law (v + 1)² − u².
    u: Array
    v: Array

    def lift(self):
        return (self.u * self.v + self.u) / 3

    def conservation_laws(self):
        return (self.v + 1) ** 2 - self.u**2


class _Tanh(models.AbstractFactorization):
    u: Array
    v: Array

    def lift(self):
        return jnp.tanh(self.u * self.v)

    def conservation_laws(self):
        return self.u**2 - self.v**2


def _scalars(cls, key):
    ku, kv = jax.random.split(key)
    return cls(jax.random.normal(ku, ()), jax.random.normal(kv, ()))


def _coefficient_rank(exprs, variables) -> int:
    monos = [sympy.Poly(e, *variables).as_dict() for e in exprs]
    keys = sorted({m for p in monos for m in p})
    return sympy.Matrix([[p.get(m, 0) for m in keys] for p in monos]).rank()


def _assert_same_span(laws, expected, variables):
    expected = [e for e in (sympy.expand(x) for x in expected) if e != 0]
    rank = _coefficient_rank(expected, variables)
    assert _coefficient_rank(list(laws), variables) == len(laws) == rank
    assert _coefficient_rank(list(laws) + expected, variables) == rank


def test_two_layer_222_is_span_of_gram_difference(getkey):
    result = polynomial_conservation_laws(models.TwoLayerLinear.random(getkey(), 2, 2, 2))
    assert isinstance(result, PolynomialConservationLaws)
    U, V = result.symbols.U, result.symbols.V
    assert (U[0, 1].name, V[1, 0].name) == ("U_0_1", "V_1_0")
    assert len(result.laws) == 3  # r(r+1)/2
    _assert_same_span(result.laws, list((U.T @ U - V.T @ V).ravel()), result.variables)
    assert all(sympy.expand(a - b) == 0 for a, b in zip(result.lifting.ravel(), (U @ V.T).ravel()))
    # laws = coefficients · monomials, with integer primitive rows
    product = result.coefficients * sympy.Matrix(result.monomials)
    assert all(sympy.expand(a - b) == 0 for a, b in zip(product, result.laws))


@pytest.mark.parametrize("widths, count", [((2, 2, 2), 3), ((2, 2, 2, 2), 6)])
def test_deep_linear_is_span_of_layer_laws(getkey, widths, count):
    result = polynomial_conservation_laws(models.DeepLinear.random(getkey(), widths))
    W = result.symbols.weights
    assert W[1][0, 1].name == "weights_1_0_1"
    expected = [
        e for j in range(len(W) - 1) for e in (W[j + 1].T @ W[j + 1] - W[j] @ W[j].T).ravel()
    ]
    assert len(result.laws) == count
    _assert_same_span(result.laws, expected, result.variables)


def test_diagonal_laws(getkey):
    result = polynomial_conservation_laws(models.DiagonalLinear.random(getkey(), (3,), 2))
    u, v = result.symbols.factors
    assert u[2].name == "factors_0_2"
    _assert_same_span(result.laws, list(u**2 - v**2), result.variables)
    # Degree 4 on the scalar uv model adds the product (u² − v²)².
    scalar = polynomial_conservation_laws(models.DiagonalLinear.random(getkey(), (), 2), 4)
    u, v = (x[()] for x in scalar.symbols.factors)
    _assert_same_span(scalar.laws, [u**2 - v**2, (u**2 - v**2) ** 2], scalar.variables)


def test_rational_inhomogeneous_lifting(getkey):
    result = polynomial_conservation_laws(_scalars(_Affine, getkey()))
    u, v = result.variables
    assert sympy.expand(result.lifting[()] - (u * v + u) / 3) == 0
    _assert_same_span(result.laws, [(v + 1) ** 2 - u**2 - 1], result.variables)  # no constants


def test_degree_one_has_no_law(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    result = polynomial_conservation_laws(model, 1)
    assert result.laws == () and result.to_jax()(model).shape == (0,)
    assert "no polynomial conservation law" in result.latex()


@eqx.filter_jit
def _law_checks(h, model, points):
    # One compiled function (eager jacobians would compile op by op): ∂h, ∂φ and ∂a (the
    # analytic laws) at θ, and h and a at `points`.
    phi, theta = manifolds.lifting_function(model)
    laws, _ = manifolds.laws_function(model)
    flat, unravel = ravel_pytree(theta)
    skeleton = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    ours = lambda x: h(eqx.combine(unravel(x), skeleton))
    theirs = lambda x: ravel_pytree(laws(unravel(x)))[0]
    jac = jax.jacfwd(lambda x: ravel_pytree(phi(unravel(x)))[0])(flat)
    grads = (jax.jacfwd(ours)(flat), jac, jax.jacfwd(theirs)(flat))
    return grads, jax.vmap(ours)(points), jax.vmap(theirs)(points)


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_laws_are_conserved_and_match_analytic_ones(getkey, name):
    model = all_factorizations[name](getkey())
    result = polynomial_conservation_laws(model)
    count, size = len(result.laws), len(result.variables)
    points = jax.random.normal(getkey(), (2 * count + 4, size))
    (grads, jac, analytic_grads), ours, theirs = _law_checks(result.to_jax(), model, points)
    # ∇h_i(θ) ⊥ ∇φ_k(θ) at a random θ, for every i and k.
    scale = np.linalg.norm(grads) * np.linalg.norm(jac)
    assert np.max(np.abs(grads @ jac.T)) <= 1e-12 * scale
    # As many laws as the analytic ones, and in their span: h(θ) = a(θ)X + c at many θ.
    assert count == np.linalg.matrix_rank(analytic_grads)
    theirs = jnp.concatenate([theirs, jnp.ones((len(points), 1))], axis=1)
    x = np.linalg.lstsq(theirs, ours, rcond=None)[0]
    assert np.allclose(theirs @ x, ours, rtol=1e-10, atol=1e-10 * np.abs(ours).max())


def test_to_jax_matches_sympy_and_transforms(getkey):
    model = models.DeepLinear.random(getkey(), (2, 2, 2, 2))
    result = polynomial_conservation_laws(model)
    h = result.to_jax()
    flat, unravel = ravel_pytree(eqx.filter(model, eqx.is_inexact_array))
    reference = sympy.lambdify(result.variables, list(result.laws), "numpy")(*np.asarray(flat))
    assert np.allclose(h(model), reference, rtol=1e-12, atol=1e-12)
    assert np.allclose(eqx.filter_jit(h)(model), reference, rtol=1e-12, atol=1e-12)
    batch = [models.DeepLinear.random(getkey(), (2, 2, 2, 2)) for _ in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    assert np.allclose(eqx.filter_vmap(h)(stacked), np.stack([h(m) for m in batch]))
    grad = eqx.filter_grad(lambda m: h(m).sum())(model)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
    with pytest.raises(ValueError, match="`model` must have the structure"):
        h(models.DeepLinear.random(getkey(), (2, 3, 2, 2)))


def test_float32_model(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    model = models.TwoLayerLinear(model.U.astype(jnp.float32), model.V.astype(jnp.float32))
    assert len(polynomial_conservation_laws(model).laws) == 3


@pytest.mark.parametrize(
    "make",
    [
        lambda k: models.TwoLayerLinear.random(k, 2, 2, 2),
        lambda k: models.DeepLinear.random(k, (2, 3, 2, 2)),
        lambda k: models.DiagonalLinear.random(k, (2,), 3),
        lambda k: _scalars(_Affine, k),
    ],
)
def test_symbolic_induced_metric_is_jacobian_gram(getkey, make):
    model = make(getkey())
    metric = symbolic_induced_metric(model)
    variables = polynomial_conservation_laws(model, 1).variables
    flat, _ = ravel_pytree(eqx.filter(model, eqx.is_inexact_array))
    value = np.asarray(sympy.lambdify(variables, metric, "numpy")(*np.asarray(flat)), float)
    jac = dense_jacobian(model)
    assert metric.shape == (jac.shape[0],) * 2 and metric == metric.T
    assert np.allclose(value, jac @ jac.T, rtol=1e-12, atol=1e-12)


def test_latex_contains_symbols(getkey):
    text = polynomial_conservation_laws(models.TwoLayerLinear.random(getkey(), 2, 2, 2)).latex()
    assert text.startswith(r"\begin{aligned}") and text.endswith(r"\end{aligned}")
    for piece in ("h_{3}", "U_{0,1}", "V_{1,0}", "U_{0,0}^{2}"):
        assert piece in text
    deep = polynomial_conservation_laws(models.DeepLinear.random(getkey(), (2, 2, 2))).latex()
    assert r"\mathrm{weights}_{1,0,1}" in deep


def test_bad_input(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    with pytest.raises(ValueError, match="`degree` must be at least 1, got 0"):
        polynomial_conservation_laws(model, 0)
    with pytest.raises(TypeError, match="degree"):  # the message is beartype's in tests
        polynomial_conservation_laws(model, 2.0)
    with pytest.raises(TypeError, match="`max_lift_degree` must be an int"):
        polynomial_conservation_laws(model, max_lift_degree=True)
    with pytest.raises(TypeError, match="AbstractFactorization"):
        polynomial_conservation_laws(jnp.ones(3))
    with pytest.raises(ValueError, match="not a polynomial in θ of degree ≤ max_lift_degree=5"):
        polynomial_conservation_laws(_scalars(_Tanh, getkey()), max_lift_degree=5)
    big = models.DeepLinear.random(getkey(), (10, 10, 10))  # D = 200: 20300 monomials
    with pytest.raises(ValueError, match=f"MAX_MONOMIALS={MAX_MONOMIALS}"):
        polynomial_conservation_laws(big)
    with pytest.raises(
        ValueError, match=f"d²·D = 64²·64 = 262144 exceeds MAX_METRIC_SIZE={MAX_METRIC_SIZE}"
    ):
        symbolic_induced_metric(models.TwoLayerLinear.random(getkey(), 8, 4, 8))


def test_lifting_function_is_the_reference(getkey):
    # The symbolic φ evaluated at θ equals `manifolds.lifting_function` (the JAX lifting).
    model = models.DeepLinear.random(getkey(), (2, 3, 2))
    result = polynomial_conservation_laws(model, 1)
    phi, theta = manifolds.lifting_function(model)
    flat, _ = ravel_pytree(theta)
    values = sympy.lambdify(result.variables, list(result.lifting.ravel()), "numpy")(
        *np.asarray(flat)
    )
    assert np.allclose(np.asarray(values), np.ravel(phi(theta)), rtol=1e-12, atol=1e-12)
