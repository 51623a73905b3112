import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import models

from .helpers import all_factorizations, intrinsic_configs


@pytest.mark.parametrize("name", sorted(all_factorizations))
def test_lift_and_laws_under_jit_and_vmap(name, getkey):
    model = all_factorizations[name](getkey())
    z = model.lift()
    assert jax.tree.all(
        jax.tree.map(lambda a, b: np.allclose(a, b), z, jax.jit(lambda m: m.lift())(model))
    )
    batch = jax.vmap(all_factorizations[name])(jax.random.split(getkey(), 3))
    zs = jax.vmap(lambda m: m.lift())(batch)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == (3, *b.shape), zs, z))


def test_diagonal_lift_and_laws():
    m = models.DiagonalLinear(
        [jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0]), jnp.array([0.5, 2.0])]
    )
    assert np.allclose(m.lift(), [1.5, -4.0])
    assert np.allclose(m.conservation_laws(), [[8.0, -3.0], [-8.75, 3.0]])


def test_two_layer_and_deep_laws_by_definition(getkey):
    m = models.TwoLayerLinear.random(getkey(), 3, 2, 4)
    assert np.allclose(m.lift(), m.U @ m.V.T)
    assert np.allclose(m.conservation_laws(), m.U.T @ m.U - m.V.T @ m.V)
    d = models.DeepLinear.random(getkey(), (2, 3, 4, 2))
    w1, w2, w3 = d.weights
    assert d.widths == (2, 3, 4, 2)
    assert np.allclose(d.lift(), w3 @ w2 @ w1)
    h1, h2 = d.conservation_laws()
    assert np.allclose(h1, w2.T @ w2 - w1 @ w1.T)
    assert np.allclose(h2, w3.T @ w3 - w2 @ w2.T)


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_relaxed_balanced_is_exact(name, getkey):
    model = intrinsic_configs[name](getkey())
    laws = model.conservation_laws()
    if isinstance(model, models.DiagonalLinear):
        lams = laws[:, :1]
        assert np.max(np.abs(laws - lams)) <= 1e-12
        return
    laws = (laws,) if isinstance(model, models.TwoLayerLinear) else laws
    for h in laws:
        lam = np.trace(h) / h.shape[0]
        assert np.linalg.norm(h - lam * np.eye(h.shape[0])) <= 1e-12


def test_relaxed_balanced_requested_values(getkey):
    m = models.TwoLayerLinear.relaxed_balanced(getkey(), 4, 3, 3, -0.5)
    assert np.allclose(m.conservation_laws(), -0.5 * np.eye(3), atol=1e-12)
    d = models.DeepLinear.relaxed_balanced(getkey(), (3, 3, 3, 3, 3), (1.0, -2.0, 0.5))
    for h, lam in zip(d.conservation_laws(), (1.0, -2.0, 0.5)):
        assert np.allclose(h, lam * np.eye(3), atol=1e-12)
    g = models.DiagonalLinear.relaxed_balanced(getkey(), (5,), 4, (1.0, -3.0, 0.25))
    assert np.allclose(
        g.conservation_laws(), np.array([1.0, -3.0, 0.25])[:, None] * np.ones(5), atol=1e-12
    )


def test_balanced_rank_condition_r_greater_than_n(getkey):
    # Balanced with r > n needs rank V <= n: the constructor must produce it.
    m = models.TwoLayerLinear.balanced(getkey(), 2, 5, 4)
    assert np.linalg.matrix_rank(np.asarray(m.V), tol=1e-10) <= 2
    assert np.linalg.norm(m.conservation_laws()) <= 1e-12


@settings(deadline=None, max_examples=30)
@given(
    n=st.integers(1, 4),
    r=st.integers(1, 5),
    m=st.integers(1, 4),
    lam=st.sampled_from([-1.5, -0.3, 0.0, 0.4, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_two_layer_relaxed_balanced_exists_iff(n, r, m, lam, seed):
    exists = lam == 0 or (lam > 0 and r <= n) or (lam < 0 and r <= m)
    key = jax.random.key(seed)
    if not exists:
        with pytest.raises(ValueError, match="No init"):
            models.TwoLayerLinear.relaxed_balanced(key, n, r, m, lam)
        return
    model = models.TwoLayerLinear.relaxed_balanced(key, n, r, m, lam)
    assert model.shape == (n, r, m)
    assert np.linalg.norm(model.conservation_laws() - lam * np.eye(r)) <= 1e-12


@settings(deadline=None, max_examples=30)
@given(
    widths=st.lists(st.integers(1, 4), min_size=3, max_size=5),
    lams=st.lists(st.sampled_from([-1.0, 0.0, 0.5]), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_deep_relaxed_balanced_exact_or_explained(widths, lams, seed):
    lams = lams[: len(widths) - 2]
    try:
        model = models.DeepLinear.relaxed_balanced(jax.random.key(seed), widths, lams)
    except ValueError as e:
        assert "No relaxed-balanced initialization" in str(e)
        # Necessary conditions: a positive lam_j needs n_{j+1} >= n_j, a negative one
        # n_{j-1} >= n_j. When they all hold with square widths, it must exist.
        assert len(set(widths)) > 1
        return
    assert model.widths == tuple(widths)
    for h, lam in zip(model.conservation_laws(), lams):
        assert np.linalg.norm(h - lam * np.eye(h.shape[0])) <= 1e-12


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda k: models.TwoLayerLinear.relaxed_balanced(k, 2, 3, 4, 1.0), "r=3 > n=2"),
        (lambda k: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 2, -1.0), "r=3 > m=2"),
        (lambda k: models.DeepLinear.relaxed_balanced(k, (3, 4, 2, 3), 1.0), "layer 2"),
        (
            lambda k: models.DeepLinear.relaxed_balanced(k, (3, 3, 3), (1.0, 2.0)),
            "one value per hidden",
        ),
        (lambda k: models.DeepLinear.random(k, (3, 3)), "at least 3 widths"),
        (lambda k: models.DeepLinear.random(k, (3, 0, 2)), "positive integers"),
        (lambda k: models.DiagonalLinear.random(k, (2,), 1), "at least 2"),
        (lambda k: models.TwoLayerLinear.random(k, 0, 2, 2), "`n` must be a positive"),
    ],
)
def test_impossible_constructors(build, match, getkey):
    with pytest.raises(ValueError, match=match):
        build(getkey())


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: models.DiagonalLinear([jnp.ones(2)]), ValueError, "at least 2 factors"),
        (lambda: models.DiagonalLinear(jnp.ones((2, 2))), TypeError, "list or tuple"),
        (
            lambda: models.DiagonalLinear([jnp.ones(2), jnp.ones(3)]),
            ValueError,
            r"factors\[1\] has shape \(3,\)",
        ),
        (
            lambda: models.DiagonalLinear([jnp.ones(2), jnp.array([1.0, jnp.inf])]),
            ValueError,
            r"factors\[1\].*finite",
        ),
        (
            lambda: models.TwoLayerLinear(jnp.ones((2, 3)), jnp.ones((4, 2))),
            ValueError,
            r"U of shape \(2, 3\) and V of shape \(4, 2\)",
        ),
        (
            lambda: models.TwoLayerLinear(jnp.ones(3), jnp.ones((4, 3))),
            ValueError,
            "`U` must be a matrix",
        ),
        (
            lambda: models.TwoLayerLinear(jnp.ones((2, 3)), jnp.full((4, 3), jnp.nan)),
            ValueError,
            "`V` must have finite",
        ),
        (
            lambda: models.TwoLayerLinear(jnp.ones((2, 3), dtype=complex), jnp.ones((4, 3))),
            TypeError,
            "real floating",
        ),
        (
            lambda: models.DeepLinear([jnp.ones((3, 2)), jnp.ones((2, 4))]),
            ValueError,
            r"weights\[1\] has shape \(2, 4\)",
        ),
        (lambda: models.DeepLinear([jnp.ones((3, 2))]), ValueError, "at least 2"),
    ],
)
def test_bad_construction(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_integer_input_is_promoted():
    m = models.TwoLayerLinear(np.ones((2, 1), dtype=int), np.ones((3, 1), dtype=int))
    assert jnp.issubdtype(m.U.dtype, jnp.floating)
