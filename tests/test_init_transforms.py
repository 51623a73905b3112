"""The relaxed-balanced constructors under JAX transformations: `vmap` over λ and over the
scale, `jit` with them traced, `grad` in them, and infeasible λ reported under `jit`.

References are independent of the code under test: the eager constructor called once per
value, the conservation laws by their definition, central finite differences.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

from .helpers import count_compilations


def _gram_laws(ws):
    r"""$(W_{j+1}^\top W_{j+1} - W_jW_j^\top, \|W_{j+1}^\top W_{j+1}\| + \|W_jW_j^\top\|)$."""
    out = []
    for a, b in zip(ws[:-1], ws[1:]):
        left, right = b.T @ b, a @ a.T
        out.append((left - right, jnp.linalg.norm(left) + jnp.linalg.norm(right)))
    return out


def _two_layer_laws(model, lams):
    ((h, size),) = _gram_laws((model.V.T, model.U))
    return [(h - lams[0] * jnp.eye(h.shape[0]), size)]


def _deep_laws(model, lams):
    return [
        (h - lam * jnp.eye(h.shape[0]), s) for (h, s), lam in zip(_gram_laws(model.weights), lams)
    ]


def _diagonal_laws(model, lams):
    u = model.factors
    return [
        (
            u[j + 1] ** 2 - u[j] ** 2 - lam,
            jnp.linalg.norm(u[j + 1] ** 2) + jnp.linalg.norm(u[j] ** 2),
        )
        for j, lam in enumerate(lams)
    ]


# name -> (build(key, lam, scale), lam -> the λ_j it asks for, feasible λ values, laws).
# Shapes with pinned singular directions (r > n, unequal widths) are included: there the
# pinned squared singular values follow λ, not a random draw.
CASES = {
    "two-layer-4-3-5": (
        lambda k, lam, s: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 5, lam, scale=s),
        lambda lam: (lam,),
        (-0.8, -0.3, 0.2, 0.7),
        _two_layer_laws,
    ),
    "two-layer-2-3-4-r>n": (
        lambda k, lam, s: models.TwoLayerLinear.relaxed_balanced(k, 2, 3, 4, lam, scale=s),
        lambda lam: (lam,),
        (-0.9, -0.6, -0.35, -0.1),
        _two_layer_laws,
    ),
    "deep-3-3-3-3": (
        lambda k, lam, s: models.DeepLinear.relaxed_balanced(k, (3, 3, 3, 3), (lam, -0.3), scale=s),
        lambda lam: (lam, -0.3),
        (-0.7, -0.2, 0.3, 0.9),
        _deep_laws,
    ),
    "deep-2-3-4-4-pinned": (
        lambda k, lam, s: models.DeepLinear.relaxed_balanced(k, (2, 3, 4, 4), (lam, 0.2), scale=s),
        lambda lam: (lam, 0.2),
        (0.1, 0.35, 0.6, 0.85),
        _deep_laws,
    ),
    "diagonal-depth3": (
        lambda k, lam, s: models.DiagonalLinear.relaxed_balanced(
            k, (4,), 3, (lam, -0.5 * lam), scale=s
        ),
        lambda lam: (lam, -0.5 * lam),
        (-1.2, -0.4, 0.3, 1.1),
        _diagonal_laws,
    ),
}
SCALES = (0.3, 0.8, 1.5)


def _assert_member_equal(a, b, rtol=1e-12):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape
        assert float(jnp.linalg.norm(x - y)) <= rtol * float(jnp.linalg.norm(y)), (x, y)


def _member(batch, i):
    return jax.tree.map(lambda x: x[i], batch)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_over_lam_and_scale_equals_eager(name, getkey):
    build, lams_of, lams, laws = CASES[name]
    key = getkey()
    lam_arr = jnp.array(lams)
    by_lam = jax.vmap(lambda lam: build(key, lam, 0.9))(lam_arr)
    for i, lam in enumerate(lams):
        member = _member(by_lam, i)
        _assert_member_equal(member, build(key, lam, 0.9))
        for h, size in laws(member, lams_of(lam)):
            assert float(jnp.linalg.norm(h)) <= 1e-12 * float(size)
    lam = lams[1]
    by_scale = jax.vmap(lambda s: build(key, lam, s))(jnp.array(SCALES))
    for i, s in enumerate(SCALES):
        member = _member(by_scale, i)
        _assert_member_equal(member, build(key, lam, s))
        for h, size in laws(member, lams_of(lam)):
            assert float(jnp.linalg.norm(h)) <= 1e-12 * float(size)
    # Not vacuous: λ changes the members (not necessarily every layer).
    a, b = (
        jnp.concatenate([x.ravel() for x in jax.tree.leaves(_member(by_lam, i))]) for i in (0, -1)
    )
    assert float(jnp.linalg.norm(a - b)) > 1e-3 * float(jnp.linalg.norm(b))


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_with_traced_lam_and_scale(name, getkey):
    build, _, lams, _ = CASES[name]
    key = getkey()
    jitted = jax.jit(build)
    first = jitted(key, lams[0], 0.7)
    # λ and the scale are values: new ones reuse the compiled program.
    with count_compilations() as c:
        second = jitted(key, lams[2], 1.3)
    assert c.count == 0
    _assert_member_equal(first, build(key, lams[0], 0.7))
    _assert_member_equal(second, build(key, lams[2], 1.3))


@pytest.mark.parametrize(
    "build, bad, match",
    [
        (
            lambda lam: models.TwoLayerLinear.relaxed_balanced(jax.random.key(0), 2, 3, 4, lam),
            0.5,
            r"lam=\(traced\) > 0 and r=3 > n=2",
        ),
        (
            lambda lam: models.TwoLayerLinear.relaxed_balanced(jax.random.key(0), 4, 3, 2, lam),
            -0.5,
            r"lam=\(traced\) < 0 and r=3 > m=2",
        ),
        (
            lambda lam: models.DeepLinear.relaxed_balanced(jax.random.key(0), (3, 4, 2, 3), lam),
            1.0,
            r"traced `lams`: layer 2 \(shape 2x4\).*negative squared singular value",
        ),
        (
            lambda lam: models.DeepLinear.relaxed_balanced(
                jax.random.key(0), (3, 2, 3, 2), (lam, -lam)
            ),
            0.4,
            "traced `lams`: layer 2 .* inconsistent with `lams`",
        ),
    ],
)
def test_infeasible_lam_raises_under_jit(build, bad, match):
    with pytest.raises(ValueError, match="No"):
        build(bad)
    with pytest.raises(eqx.EquinoxRuntimeError, match=match):
        jax.block_until_ready(eqx.filter_jit(build)(bad))
    with pytest.raises(eqx.EquinoxRuntimeError, match=match):
        jax.block_until_ready(jax.vmap(build)(jnp.array([0.0, bad])))


@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_in_lam_and_scale_matches_central_differences(name, getkey):
    build, _, lams, _ = CASES[name]
    key, wkey = getkey(), getkey()
    shapes = jax.eval_shape(lambda: build(key, lams[1], 0.9))
    probes = [
        jax.random.normal(k, x.shape)
        for k, x in zip(
            jax.random.split(wkey, len(jax.tree.leaves(shapes))), jax.tree.leaves(shapes)
        )
    ]

    def f(lam, s):
        # A generic smooth scalar of the weights: a cubic in every entry.
        leaves = jax.tree.leaves(build(key, lam, s))
        return sum(jnp.sum(p * w + 0.1 * w**3) for p, w in zip(probes, leaves))

    lam, s = lams[1], 0.9
    grad = jax.jit(jax.grad(f, argnums=(0, 1)))(lam, s)
    h = 1e-5
    fd = (
        (f(lam + h, s) - f(lam - h, s)) / (2 * h),
        (f(lam, s + h) - f(lam, s - h)) / (2 * h),
    )
    g, d = np.array([float(x) for x in grad]), np.array([float(x) for x in fd])
    assert np.all(np.isfinite(g))
    assert np.linalg.norm(g - d) <= 1e-6 * np.linalg.norm(g)
    assert np.linalg.norm(g) > 0


def test_linear_neural_ode_vmap_over_lam_and_scale(getkey):
    # The continuous-depth model's init is a depth solve in λ and the scale: vmappable too.
    key = getkey()

    def build(lam, s):
        return models.LinearNeuralODE.relaxed_balanced(key, 2, degree=3, lam=lam, scale=s)

    lams, scales = jnp.array([-0.4, 0.6]), jnp.array([0.5, 1.2])
    batch = jax.vmap(build)(lams, scales)
    for i in range(2):
        _assert_member_equal(
            _member(batch, i).coeffs, build(float(lams[i]), float(scales[i])).coeffs, 1e-10
        )
