import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jax.flatten_util import ravel_pytree

import manifolds
import models
from manifolds._lie_algebra import _sample_level, lie_algebra_trace

from .helpers import dense_jacobian, dense_laws_jacobian


def _rank(m, rtol=1e-9) -> int:
    s = np.linalg.svd(np.asarray(m), compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0


def _dense_bracket_value(f, t, chain):
    """[X_{c_k}, [..., [X_{c_1}, X_{c_0}]]](t), X_c = ∇(c·f), with dense `jax.jacfwd` Jacobians:
    [X, Y] = (∂Y) X − (∂X) Y. Independent of the library's nested-jvp scheme."""
    field = lambda u, c=chain[0]: jax.grad(lambda w: c @ f(w))(u)
    for c in chain[1:]:
        x = lambda u, c=c: jax.grad(lambda w: c @ f(w))(u)
        field = lambda u, x=x, y=field: jax.jacfwd(y)(u) @ x(u) - jax.jacfwd(x)(u) @ y(u)
    return field(t)


def _exhaustive_dimensions(model, levels: int) -> list[int]:
    """dim W_k(θ), k ≤ levels, from all d^(k+1) index chains of generators ∇φ_i."""
    phi, theta = manifolds.lifting_function(model)
    t0, unravel = ravel_pytree(theta)
    f = lambda t: ravel_pytree(phi(unravel(t)))[0]
    eye = jnp.eye(f(t0).size)
    vectors, dims = [], []
    for k in range(levels + 1):
        chains = eye[np.array(list(itertools.product(range(eye.shape[0]), repeat=k + 1)))]
        vectors.append(jax.vmap(lambda c: _dense_bracket_value(f, t0, c))(chains))
        dims.append(_rank(np.concatenate(vectors)))
    return dims


@pytest.mark.parametrize(
    "make",
    [
        lambda k: models.TwoLayerLinear.random(k, 2, 2, 2),
        lambda k: models.DeepLinear.random(k, (2, 2, 2)),
    ],
)
def test_reference_values_222(make, getkey):
    # THEORY §4: D = 8, rank W = 4, dim Lie(W)(θ) = 5, hence 3 laws; not Frobenius.
    t = lie_algebra_trace(make(getkey()), key=getkey())
    assert (t.num_parameters, t.span_rank, t.dimension, t.num_conservation_laws) == (8, 4, 5, 3)
    assert t.frobenius is False and t.converged is True
    assert t.dimensions_per_level == (4, 5, 5)
    assert t.singular_value_gap > 1e6 and t.tolerance == pytest.approx(np.sqrt(2.0**-52))


def test_matches_exhaustive_dense_brackets(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    assert _exhaustive_dimensions(model, 2) == list(lie_algebra_trace(model).dimensions_per_level)


@pytest.mark.parametrize("level", [1, 2])
def test_bracket_values_under_jit(level, getkey):
    # The jitted, vmapped nested-jvp brackets against dense Jacobians of the same fields.
    model = models.DeepLinear.random(getkey(), (2, 3, 2))
    phi, theta = manifolds.lifting_function(model)
    t0, unravel = ravel_pytree(theta)
    f = lambda t: ravel_pytree(phi(unravel(t)))[0]
    a = jax.random.normal(getkey(), (3, level + 1, 4))
    got = np.asarray(_sample_level(phi, theta, a))
    unit = a / jnp.linalg.norm(a, axis=2, keepdims=True)
    want = np.asarray(jax.vmap(lambda c: _dense_bracket_value(f, t0, c))(unit))
    assert np.all(np.linalg.norm(want, axis=1) > 1e-3)
    normalize = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(normalize(got), normalize(want), atol=1e-12)


@pytest.mark.parametrize("nrm", [(3, 2, 4), (2, 5, 3), (4, 3, 2)])
def test_two_layer_counts(nrm, getkey):
    n, r, m = nrm
    model = models.TwoLayerLinear.random(getkey(), n, r, m)
    t = lie_algebra_trace(model, key=getkey())
    assert t.converged and t.num_parameters == (n + m) * r
    assert t.num_conservation_laws == r * (r + 1) // 2 == _rank(dense_laws_jacobian(model))
    assert t.span_rank == _rank(dense_jacobian(model))


def test_two_layer_wide_has_fewer_laws(getkey):
    # r > n + m: (U; V) cannot have full rank r, and fewer than r(r+1)/2 laws are independent.
    model = models.TwoLayerLinear.random(getkey(), 1, 3, 1)
    t = lie_algebra_trace(model)
    assert t.num_conservation_laws == _rank(dense_laws_jacobian(model)) == 5 < 6
    assert t.frobenius  # one generator: its span is trivially involutive


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(widths=st.lists(st.integers(2, 3), min_size=3, max_size=4))
def test_deep_linear_counts(widths, getkey):
    model = models.DeepLinear.random(getkey(), widths)
    t = lie_algebra_trace(model, key=getkey())
    closed_form = sum(n * (n + 1) // 2 for n in widths[1:-1])
    assert t.converged
    assert t.num_conservation_laws == closed_form == _rank(dense_laws_jacobian(model))
    assert t.span_rank == _rank(dense_jacobian(model))
    assert t.dimension == t.num_parameters - closed_form


def test_deep_linear_24522_needs_several_levels(getkey):
    # D = 42, laws 10 + 15 + 3 = 28, so dim Lie(W)(θ) = 14: reached only by brackets of
    # brackets (levels 1-3 add 5, 4, 1 directions; level 4 confirms).
    model = models.DeepLinear.random(getkey(), (2, 4, 5, 2, 2))
    t = lie_algebra_trace(model, key=getkey())
    assert t.dimensions_per_level == (4, 9, 13, 14, 14)
    assert (t.num_parameters, t.dimension, t.num_conservation_laws) == (42, 14, 28)
    assert t.num_conservation_laws == _rank(dense_laws_jacobian(model))
    assert t.converged and not t.frobenius


@pytest.mark.parametrize("shape,depth", [((3,), 2), ((2, 2), 3), ((), 4)])
def test_diagonal_counts(shape, depth, getkey):
    model = models.DiagonalLinear.random(getkey(), shape, depth)
    size = int(np.prod(shape))
    t = lie_algebra_trace(model, key=getkey())
    assert t.num_conservation_laws == (depth - 1) * size
    assert t.frobenius and t.converged and t.dimensions_per_level == (size, size)


def test_keys_change_samples_not_results(getkey):
    model = models.DeepLinear.random(getkey(), (2, 2, 3))
    a, b = lie_algebra_trace(model, key=getkey()), lie_algebra_trace(model, key=getkey())
    assert a.dimensions_per_level == b.dimensions_per_level
    assert lie_algebra_trace(model) == lie_algebra_trace(model)  # key=None: a fixed seed


def test_follows_parameter_dtype(getkey):
    m = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    m32 = models.TwoLayerLinear(m.U.astype(jnp.float32), m.V.astype(jnp.float32))
    t = lie_algebra_trace(m32)
    assert t.tolerance == pytest.approx(np.sqrt(np.finfo(np.float32).eps))
    assert (t.dimension, t.num_conservation_laws, t.converged) == (5, 3, True)


def test_max_depth_reached_is_undecided(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    t = lie_algebra_trace(model, max_depth=1)
    assert not t.converged and "max_depth" in t.reason
    assert t.dimension is None and t.num_conservation_laws is None
    assert t.frobenius is False  # a bracket already left W_θ: certain
    assert t.dimensions_per_level == (4, 5)
    t0 = lie_algebra_trace(model, max_depth=0)
    assert not t0.converged and t0.frobenius is None and t0.dimensions_per_level == (4,)


def test_ambiguous_rank_is_undecided(getkey):
    # A tolerance in the middle of the singular values: no gap, so no verdict.
    t = lie_algebra_trace(models.TwoLayerLinear.random(getkey(), 3, 2, 3), rtol=0.999)
    assert not t.converged and "ambiguous" in t.reason
    assert t.singular_value_gap < 1e2 and t.dimension is None and t.frobenius is None


def test_bad_inputs(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    for bad in (jnp.nan, jnp.inf):
        broken = eqx.tree_at(lambda m: m.U, model, model.U.at[0, 1].set(bad))
        with pytest.raises(ValueError, match="non-finite"):
            lie_algebra_trace(broken)
    with pytest.raises(ValueError, match="MAX_ENTRIES"):
        lie_algebra_trace(models.DiagonalLinear.random(getkey(), (6000,), 2))
    with pytest.raises(ValueError, match="max_depth"):
        lie_algebra_trace(model, max_depth=-1)
    for rtol in (0.0, 1.5):
        with pytest.raises(ValueError, match="rtol"):
            lie_algebra_trace(model, rtol=rtol)
    with pytest.raises(TypeError):
        lie_algebra_trace("not a model")  # pyright: ignore
    with pytest.raises(TypeError, match="outside `jit`"):
        jax.jit(lambda m: lie_algebra_trace(m).span_rank)(model)
