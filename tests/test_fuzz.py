"""Fuzzing the closed-form metrics: random architectures, λ, scales (1e-6 … 1e3), depths and
bottlenecks. Each case ends in one of two ways, never a silent miss:

- a `ValueError` whose message gives the documented reason (no such init, or outside the
  closed form's domain), or
- K(φ(θ)) equal to the induced metric JJᵀ, J built with `jax.jacfwd` here, to a small
  multiple of ε relative to ‖JJᵀ‖ (times σ₁/σ_r in the two-layer projector case, whose
  documented accuracy degrades as σ_r(Z) → 0).

CI runs a bounded profile; `INTRINSIC_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py` runs a
nightly-size one.
"""

import collections
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import manifolds
import models

from .helpers import dense_jacobian

EPS = float(jnp.finfo(jnp.float64).eps)
EXAMPLES = int(os.environ.get("INTRINSIC_FUZZ_EXAMPLES", "5"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="INTRINSIC_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)
# Why a construction or a closed form may refuse a case (the documented reasons).
REFUSALS = ("No relaxed-balanced", "No init with", "square widths", "rank Z = r")

scales = st.sampled_from([1e-6, 1e-3, 1.0, 1e3])
lams = st.floats(-1.0, 1.0).map(lambda x: round(x, 3))


# family -> errors (in units of ε) of the accepted cases, and the count of refusals;
# printed at the end of the module (`pytest -s tests/test_fuzz.py`).
TALLY = collections.defaultdict(lambda: {"errors": [], "refused": 0})


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    print("\nfuzz tally (K against jacfwd-built JJᵀ, error in units of ε relative to ‖JJᵀ‖):")
    for family, t in sorted(TALLY.items()):
        errs = t["errors"]
        worst = f"{max(errs):.1f}" if errs else "-"
        print(
            f"  {family}: {len(errs) + t['refused']} cases, {t['refused']} refused with the "
            f"documented reason, {len(errs)} compared, max error {worst} ε, silent misses 0"
        )


def _check(build, bound=1e3):
    family = inspect.stack()[1].function.removeprefix("test_")
    try:
        model = build()
        K = manifolds.intrinsic_metric(model)
    except ValueError as e:
        assert any(reason in str(e) for reason in REFUSALS), str(e)
        TALLY[family]["refused"] += 1
        return
    J = dense_jacobian(model)
    M = J @ J.T
    err = float(jnp.max(jnp.abs(K(model.lift()).as_matrix() - M)) / jnp.max(jnp.abs(M)))
    limit = bound(model) if callable(bound) else bound
    assert err <= limit * EPS, err
    TALLY[family]["errors"].append(err / EPS)


def _projector_bound(model):
    sigma = np.linalg.svd(np.asarray(model.lift()), compute_uv=False)
    r = model.shape[1]
    sigma_r = sigma[r - 1] if r <= sigma.size else 0.0
    return 1e3 * max(1.0, sigma[0] / sigma_r) if sigma_r > 0 else np.inf


@FUZZ
@given(
    n=st.integers(1, 4),
    r=st.integers(1, 4),
    m=st.integers(1, 4),
    lam=lams,
    scale=scales,
    seed=st.integers(0, 2**16),
)
def test_two_layer(n, r, m, lam, scale, seed):
    _check(
        lambda: models.TwoLayerLinear.relaxed_balanced(
            jax.random.key(seed), n, r, m, lam * scale**2, scale=scale
        ),
        _projector_bound,
    )


@FUZZ
@given(
    widths=st.lists(st.integers(1, 4), min_size=3, max_size=5).map(tuple),
    scale=scales,
    seed=st.integers(0, 2**16),
)
def test_deep_balanced_any_widths_and_bottlenecks(widths, scale, seed):
    _check(lambda: models.DeepLinear.balanced(jax.random.key(seed), widths, scale=scale))


@FUZZ
@given(
    n=st.integers(1, 3),
    depth=st.integers(2, 4),
    data=st.data(),
    scale=scales,
    seed=st.integers(0, 2**16),
)
def test_deep_relaxed_square(n, depth, data, scale, seed):
    values = tuple(data.draw(lams) * scale**2 for _ in range(depth - 1))
    _check(
        lambda: models.DeepLinear.relaxed_balanced(
            jax.random.key(seed), (n,) * (depth + 1), values, scale=scale
        )
    )


@FUZZ
@given(
    size=st.integers(1, 4),
    depth=st.integers(2, 4),
    data=st.data(),
    scale=scales,
    seed=st.integers(0, 2**16),
)
def test_diagonal_chain(size, depth, data, scale, seed):
    values = tuple(data.draw(lams) * scale**2 for _ in range(depth - 1))
    _check(
        lambda: models.DiagonalLinear.relaxed_balanced(
            jax.random.key(seed), (size,), depth, values, scale=scale
        )
    )
