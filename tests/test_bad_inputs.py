"""A clear error for every bad input of every public entry point (issue 13).

One table: `(entry point, bad input, expected exception, regex on the message)`. Every
message names the argument, shows what was received (value, shape, dtype or type) and
says what was expected; none is a foreign traceback (AttributeError, a broadcasting or
closure-conversion error from inside JAX). Under the tests' runtime type checks
(jaxtyping + beartype) a wrongly typed argument may be refused by the type checker first:
those rows match on the argument's name only (`TypeError`, which `TypeCheckError` is).
Non-finite values are also tried under `jit`, where `eqx.error_if` must say non-finite.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import pytest

import flows
import manifolds
import models

KEY = jax.random.key(0)
NAN = float("nan")
VALUE_OR_TYPE = (ValueError, TypeError)


def _two_layer():
    return models.TwoLayerLinear.relaxed_balanced(KEY, 3, 2, 4, 0.5)


def _deep():
    return models.DeepLinear.balanced(KEY, (2, 3, 2))


def _diagonal():
    return models.DiagonalLinear.relaxed_balanced(KEY, (3,), 2, 0.5)


def _loss(z, args):
    return 0.5 * jnp.sum((z - 1.0) ** 2)


def _nan_loss(z, args):
    return jnp.nan * jnp.sum(z)


def _with_nan(model):
    return eqx.tree_at(lambda m: m.U, model, model.U.at[0, 0].set(jnp.nan))


def _K():
    return manifolds.intrinsic_metric(_two_layer())


def _z():
    return _two_layer().lift()


def _jit_K_nan(K, z):
    return eqx.filter_jit(lambda z: K(z).mv(z))(z.at[0, 0].set(jnp.nan))


def _stacked():
    return flows.stack([_two_layer(), models.TwoLayerLinear.relaxed_balanced(KEY, 3, 2, 4, 0.3)])


def _flow(**kw):
    return flows.euclidean_flow(_two_layer(), _loss, 0.0, 1.0, **kw)


def _iflow(K=None, f=_loss, z0=None, **kw):
    return flows.intrinsic_flow(
        _K() if K is None else K, f, 0.0, 1.0, _z() if z0 is None else z0, **kw
    )


# (id, thunk, exception, regex)
CASES = [
    # --- models: TwoLayerLinear -------------------------------------------------------
    (
        "TwoLayerLinear.random/int key",
        lambda: models.TwoLayerLinear.random(0, 3, 2, 4),
        TypeError,
        r"key",
    ),
    (
        "TwoLayerLinear.random/batch of keys",
        lambda: models.TwoLayerLinear.random(jax.random.split(KEY), 3, 2, 4),
        TypeError,
        r"key",
    ),
    (
        "TwoLayerLinear.random/n=0",
        lambda: models.TwoLayerLinear.random(KEY, 0, 2, 4),
        ValueError,
        r"`n` must be a positive integer, got 0",
    ),
    (
        "TwoLayerLinear.random/r=2.5",
        lambda: models.TwoLayerLinear.random(KEY, 3, 2.5, 4),
        VALUE_OR_TYPE,
        r"`?r`?",
    ),
    (
        "TwoLayerLinear.random/scale str",
        lambda: models.TwoLayerLinear.random(KEY, 3, 2, 4, scale="big"),
        TypeError,
        r"`scale` must be an array of floats, got str",
    ),
    (
        "TwoLayerLinear.random/scale nan",
        lambda: models.TwoLayerLinear.random(KEY, 3, 2, 4, scale=NAN),
        ValueError,
        r"`scale` must be a finite number, got non-finite nan",
    ),
    (
        "TwoLayerLinear.relaxed_balanced/str key",
        lambda: models.TwoLayerLinear.relaxed_balanced("k", 3, 2, 4, 0.5),
        TypeError,
        r"key",
    ),
    (
        "TwoLayerLinear.relaxed_balanced/lam str",
        lambda: models.TwoLayerLinear.relaxed_balanced(KEY, 3, 2, 4, "a"),
        TypeError,
        r"lam",
    ),
    (
        "TwoLayerLinear.relaxed_balanced/lam vector",
        lambda: models.TwoLayerLinear.relaxed_balanced(KEY, 3, 2, 4, [0.1, 0.2]),
        VALUE_OR_TYPE,
        r"lam",
    ),
    (
        "TwoLayerLinear.relaxed_balanced/infeasible lam",
        lambda: models.TwoLayerLinear.relaxed_balanced(KEY, 2, 3, 4, 1.0),
        ValueError,
        r"lam=1\.0 > 0 and r=3 > n=2",
    ),
    (
        "TwoLayerLinear.balanced/scale nan",
        lambda: models.TwoLayerLinear.balanced(KEY, 3, 2, 4, scale=NAN),
        ValueError,
        r"`scale` must be a finite number",
    ),
    (
        "TwoLayerLinear.relaxed_balanced/nan scale under jit",
        lambda: eqx.filter_jit(
            lambda s: models.TwoLayerLinear.relaxed_balanced(KEY, 3, 2, 4, 0.5, scale=s).U
        )(NAN),
        eqx.EquinoxRuntimeError,
        r"`scale` must be a finite number, got non-finite",
    ),
    (
        "TwoLayerLinear/U vector",
        lambda: models.TwoLayerLinear(jnp.ones(3), jnp.ones((4, 2))),
        ValueError,
        r"`U` must be a matrix \(2 dimensions\), got shape \(3,\)",
    ),
    (
        "TwoLayerLinear/columns differ",
        lambda: models.TwoLayerLinear(jnp.ones((3, 2)), jnp.ones((4, 3))),
        ValueError,
        r"same number of columns r: got U of shape \(3, 2\) and V of shape \(4, 3\)",
    ),
    (
        "TwoLayerLinear/U nan",
        lambda: models.TwoLayerLinear(jnp.full((3, 2), jnp.nan), jnp.ones((4, 2))),
        ValueError,
        r"`U` must have finite entries; got nan .*non-finite",
    ),
    (
        "TwoLayerLinear/U str",
        lambda: models.TwoLayerLinear("U", jnp.ones((4, 2))),
        TypeError,
        r"`U` must be an array of floats, got str",
    ),
    (
        "TwoLayerLinear/U complex",
        lambda: models.TwoLayerLinear(jnp.ones((3, 2), complex), jnp.ones((4, 2))),
        TypeError,
        r"`U` must be a real floating array, got dtype complex128",
    ),
    (
        "TwoLayerLinear/U nan under jit",
        lambda: eqx.filter_jit(lambda u: models.TwoLayerLinear(u, jnp.ones((4, 2))).U)(
            jnp.full((3, 2), jnp.nan)
        ),
        eqx.EquinoxRuntimeError,
        r"`U` must have finite entries \(got non-finite",
    ),
    # --- models: DeepLinear, DiagonalLinear, ReLUNetwork --------------------------------
    (
        "DeepLinear.random/widths int",
        lambda: models.DeepLinear.random(KEY, 5),
        TypeError,
        r"`widths` must be a list or tuple of positive integers, got 5",
    ),
    (
        "DeepLinear.random/zero width",
        lambda: models.DeepLinear.random(KEY, (2, 0, 3)),
        ValueError,
        r"`widths` must contain positive integers, got \(2, 0, 3\)",
    ),
    (
        "DeepLinear.random/str width",
        lambda: models.DeepLinear.random(KEY, (2, "a", 3)),
        ValueError,
        r"`widths` must contain positive integers, got \(2, 'a', 3\)",
    ),
    (
        "DeepLinear.random/one layer",
        lambda: models.DeepLinear.random(KEY, (2, 3)),
        ValueError,
        r"`widths` must list at least 3 widths .* got \(2, 3\)",
    ),
    (
        "DeepLinear.random/int key",
        lambda: models.DeepLinear.random(7, (2, 3, 2)),
        TypeError,
        r"key",
    ),
    (
        "DeepLinear.relaxed_balanced/lams count",
        lambda: models.DeepLinear.relaxed_balanced(KEY, (2, 2, 2, 2), [0.1, 0.2, 0.3]),
        ValueError,
        r"`lams` must be a scalar or have one value per hidden layer \(2\), got 3",
    ),
    (
        "DeepLinear.relaxed_balanced/lams str",
        lambda: models.DeepLinear.relaxed_balanced(KEY, (2, 2, 2), "x"),
        TypeError,
        r"lams",
    ),
    (
        "DeepLinear.balanced/scale nan",
        lambda: models.DeepLinear.balanced(KEY, (2, 3, 2), scale=NAN),
        ValueError,
        r"`scale` must be a finite number",
    ),
    (
        "DeepLinear/not chaining",
        lambda: models.DeepLinear([jnp.ones((3, 2)), jnp.ones((2, 4))]),
        ValueError,
        r"`weights` do not chain: weights\[1\] has shape \(2, 4\)",
    ),
    (
        "DeepLinear/array, not a list",
        lambda: models.DeepLinear(jnp.ones((2, 2, 2))),
        TypeError,
        r"`weights` must be a list or tuple of arrays, got ArrayImpl",
    ),
    (
        "DeepLinear/one factor",
        lambda: models.DeepLinear([jnp.ones((2, 2))]),
        ValueError,
        r"`weights` needs at least 2 factors, got 1",
    ),
    (
        "DeepLinear/inf weight",
        lambda: models.DeepLinear([jnp.ones((3, 2)), jnp.full((2, 3), jnp.inf)]),
        ValueError,
        r"`weights\[1\]` must have finite entries; got inf",
    ),
    (
        "DiagonalLinear.random/shape int",
        lambda: models.DiagonalLinear.random(KEY, 3),
        TypeError,
        r"shape",
    ),
    (
        "DiagonalLinear.random/negative shape",
        lambda: models.DiagonalLinear.random(KEY, (2, -1)),
        ValueError,
        r"`shape` must be a tuple of non-negative integers, got \(2, -1\)",
    ),
    (
        "DiagonalLinear.random/depth=1",
        lambda: models.DiagonalLinear.random(KEY, (3,), 1),
        ValueError,
        r"`depth` must be at least 2, got 1",
    ),
    (
        "DiagonalLinear.relaxed_balanced/lams count",
        lambda: models.DiagonalLinear.relaxed_balanced(KEY, (3,), 3, [0.1, 0.2, 0.3]),
        ValueError,
        r"`lams` must be a scalar or have one value per hidden layer \(2\), got 3",
    ),
    (
        "DiagonalLinear.balanced/float key",
        lambda: models.DiagonalLinear.balanced(1.5, (3,)),
        TypeError,
        r"key",
    ),
    (
        "DiagonalLinear/shapes differ",
        lambda: models.DiagonalLinear([jnp.ones(3), jnp.ones(2)]),
        ValueError,
        r"factors\[1\] has shape \(2,\)",
    ),
    (
        "DiagonalLinear/nan factor",
        lambda: models.DiagonalLinear([jnp.ones(3), jnp.full(3, jnp.nan)]),
        ValueError,
        r"`factors\[1\]` must have finite entries; got nan",
    ),
    (
        "ReLUNetwork.random/int key",
        lambda: models.ReLUNetwork.random(3, (2, 3, 1)),
        TypeError,
        r"key",
    ),
    (
        "ReLUNetwork.random/widths str",
        lambda: models.ReLUNetwork.random(KEY, "231"),
        TypeError,
        r"`widths` must be a list or tuple",
    ),
    # --- manifolds: intrinsic_metric and the metrics --------------------------------------
    (
        "intrinsic_metric/rtol nan",
        lambda: manifolds.intrinsic_metric(_two_layer(), rtol=NAN),
        ValueError,
        r"`rtol` must be positive and lie in \(eps, 1\) = \(2\.22e-16, 1\) for float64, got nan",
    ),
    (
        "intrinsic_metric/rtol 2",
        lambda: manifolds.intrinsic_metric(_deep(), rtol=2.0),
        ValueError,
        r"`rtol` must be positive and lie in \(eps, 1\).*got 2\.0",
    ),
    (
        "intrinsic_metric/rtol 1e-300",
        lambda: manifolds.intrinsic_metric(_two_layer(), rtol=1e-300),
        ValueError,
        r"`rtol` .*got 1e-300",
    ),
    (
        "intrinsic_metric/rtol str",
        lambda: manifolds.intrinsic_metric(_two_layer(), rtol="1e-8"),
        TypeError,
        r"rtol",
    ),
    (
        "intrinsic_metric/rtol negative, diagonal",
        lambda: manifolds.intrinsic_metric(_diagonal(), rtol=-1.0),
        ValueError,
        r"`rtol` must be positive .*got -1\.0",
    ),
    (
        "intrinsic_metric/not a model",
        lambda: manifolds.intrinsic_metric("model"),
        TypeError,
        r"model",
    ),
    (
        "TwoLayerLinearMetric/z wrong shape",
        lambda: _K()(jnp.ones((5, 6))),
        ValueError,
        r"`z` must have shape \(3, 4\), the shape of `model.lift\(\)`.*got shape \(5, 6\)",
    ),
    (
        "TwoLayerLinearMetric/z transposed",
        lambda: _K()(_z().T),
        ValueError,
        r"`z` must have shape \(3, 4\).*got shape \(4, 3\)",
    ),
    ("TwoLayerLinearMetric/z vector", lambda: _K()(jnp.ones(12)), VALUE_OR_TYPE, r"`?z`?"),
    (
        "TwoLayerLinearMetric/z nan",
        lambda: _K()(_z().at[1, 2].set(jnp.nan)),
        ValueError,
        r"`z` must have finite entries; got nan at index \(1, 2\) \(1 non-finite",
    ),
    (
        "TwoLayerLinearMetric/z nan under jit",
        lambda: _jit_K_nan(_K(), _z()),
        eqx.EquinoxRuntimeError,
        r"`z` must have finite entries \(got non-finite",
    ),
    ("TwoLayerLinearMetric/z str", lambda: _K()("z"), TypeError, r"`?z`?"),
    (
        "TwoLayerLinearMetric.mv/g transposed",
        lambda: _K()(_z()).mv(_z().T),
        ValueError,
        r"`vector` \(the argument of `.mv`\) must be shaped like z, with shape \(3, 4\) and dtype float64; got shape \(4, 3\)",
    ),
    (
        "TwoLayerLinearMetric.mv/g float32",
        lambda: _K()(_z()).mv(_z().astype(jnp.float32)),
        ValueError,
        r"`vector` .* dtype float64; got shape \(3, 4\) and dtype float32",
    ),
    (
        "TwoLayerLinearMetric/lam vector",
        lambda: manifolds.TwoLayerLinearMetric(jnp.ones(2), 2),
        ValueError,
        r"`lam` must be a scalar, got an array of shape \(2,\)",
    ),
    (
        "TwoLayerLinearMetric/rank 0",
        lambda: manifolds.TwoLayerLinearMetric(0.0, 0),
        ValueError,
        r"`rank` must be a positive integer, got 0",
    ),
    (
        "DeepLinearMetric/z wrong shape",
        lambda: manifolds.intrinsic_metric(_deep())(jnp.ones((3, 3))),
        ValueError,
        r"`z` must have shape \(2, 2\).*got shape \(3, 3\)",
    ),
    (
        "DeepLinearMetric/z nan under jit",
        lambda: _jit_K_nan(manifolds.intrinsic_metric(_deep()), _deep().lift()),
        eqx.EquinoxRuntimeError,
        r"non-finite",
    ),
    (
        "DiagonalChainMetric/z wrong shape",
        lambda: manifolds.intrinsic_metric(_diagonal())(jnp.ones(4)),
        ValueError,
        r"`z` must have shape \(3,\), the shape of the conserved values.*got shape \(4,\)",
    ),
    (
        "DiagonalChainMetric/z nan under jit",
        lambda: eqx.filter_jit(lambda z: manifolds.intrinsic_metric(_diagonal())(z).mv(z))(
            jnp.full(3, jnp.nan)
        ),
        eqx.EquinoxRuntimeError,
        r"`z` must have finite entries \(got non-finite",
    ),
    (
        "DiagonalChainMetric.mv/g wrong shape",
        lambda: manifolds.intrinsic_metric(_diagonal())(jnp.ones(3)).mv(jnp.ones(2)),
        ValueError,
        r"`vector` .* shape \(3,\) and dtype float64; got shape \(2,\)",
    ),
    (
        "DiagonalChainMetric/lams str",
        lambda: manifolds.DiagonalChainMetric("x"),
        TypeError,
        r"lams",
    ),
    (
        "LogMeanMetric/z nan",
        lambda: manifolds.LogMeanMetric()(jnp.full((2, 2), jnp.nan)),
        ValueError,
        r"`z` must have finite entries; got nan",
    ),
    # --- manifolds: induced metric --------------------------------------------------------
    ("induced_metric/not a model", lambda: manifolds.induced_metric("m"), TypeError, r"model"),
    (
        "induced_metric.mv/g wrong shape",
        lambda: manifolds.induced_metric(_two_layer()).mv(jnp.ones(5)),
        ValueError,
        r"`vector` \(the argument of `.mv`\) must be shaped like model.lift\(\), with shape \(3, 4\) and dtype float64; got shape \(5,\)",
    ),
    (
        "induced_metric.mv/g wrong shape under jit",
        lambda: jax.jit(lambda g: manifolds.induced_metric(_two_layer()).mv(g))(jnp.ones((4, 3))),
        ValueError,
        r"`vector` .*shape \(3, 4\).*got shape \(4, 3\)",
    ),
    (
        "induced_metric.mv/g int",
        lambda: manifolds.induced_metric(_two_layer()).mv(jnp.ones((3, 4), int)),
        ValueError,
        r"`vector` .*dtype float64; got shape \(3, 4\) and dtype int64",
    ),
    # --- manifolds: Lie algebra, conservation laws, kernel tests --------------------------
    (
        "lie_algebra_trace/rtol 1e-300",
        lambda: manifolds.lie_algebra_trace(_two_layer(), rtol=1e-300),
        ValueError,
        r"`rtol` must be positive and lie in \(eps, 1\).*got 1e-300",
    ),
    (
        "lie_algebra_trace/rtol nan",
        lambda: manifolds.lie_algebra_trace(_two_layer(), rtol=NAN),
        ValueError,
        r"`rtol` .*got nan",
    ),
    (
        "lie_algebra_trace/rtol str",
        lambda: manifolds.lie_algebra_trace(_two_layer(), rtol="small"),
        TypeError,
        r"rtol",
    ),
    (
        "lie_algebra_trace/int key",
        lambda: manifolds.lie_algebra_trace(_two_layer(), key=0),
        TypeError,
        r"key",
    ),
    (
        "lie_algebra_trace/max_depth float",
        lambda: manifolds.lie_algebra_trace(_two_layer(), max_depth=1.5),
        VALUE_OR_TYPE,
        r"max_depth",
    ),
    (
        "lie_algebra_trace/not a model",
        lambda: manifolds.lie_algebra_trace(jnp.ones(3)),
        TypeError,
        r"model",
    ),
    (
        "lie_algebra_trace/nan parameters",
        lambda: manifolds.lie_algebra_trace(_with_nan(_two_layer())),
        ValueError,
        r"`model` has non-finite parameters",
    ),
    (
        "polynomial_conservation_laws/degree 0",
        lambda: manifolds.polynomial_conservation_laws(_two_layer(), 0),
        ValueError,
        r"`degree` must be at least 1, got 0",
    ),
    (
        "polynomial_conservation_laws/degree str",
        lambda: manifolds.polynomial_conservation_laws(_two_layer(), "2"),
        TypeError,
        r"degree",
    ),
    (
        "polynomial_conservation_laws/max_lift_degree 0",
        lambda: manifolds.polynomial_conservation_laws(_two_layer(), max_lift_degree=0),
        ValueError,
        r"`max_lift_degree` must be at least 1, got 0",
    ),
    (
        "polynomial_conservation_laws/not a model",
        lambda: manifolds.polynomial_conservation_laws(3),
        TypeError,
        r"model",
    ),
    (
        "recoverability_test/rtol 2",
        lambda: manifolds.recoverability_test(_two_layer(), rtol=2.0),
        ValueError,
        r"`rtol` must be positive .*got 2\.0",
    ),
    (
        "recoverability_test/laws not callable",
        lambda: manifolds.recoverability_test(_two_layer(), laws=3),
        TypeError,
        r"laws",
    ),
    (
        "recoverability_test/str key",
        lambda: manifolds.recoverability_test(_two_layer(), key="k"),
        TypeError,
        r"key",
    ),
    (
        "kernel_inclusion_test/rtol 1e-300",
        lambda: manifolds.kernel_inclusion_test(_two_layer(), rtol=1e-300),
        ValueError,
        r"`rtol` .*got 1e-300",
    ),
    (
        "kernel_inclusion_test/nan parameters",
        lambda: manifolds.kernel_inclusion_test(_with_nan(_two_layer())),
        ValueError,
        r"non-finite",
    ),
    # --- manifolds: RecoveredMetric, mirror_flow_test -------------------------------------
    (
        "RecoveredMetric/rtol nan",
        lambda: manifolds.RecoveredMetric(_two_layer(), rtol=NAN),
        ValueError,
        r"`rtol` must be positive .*got nan",
    ),
    (
        "RecoveredMetric/atol negative",
        lambda: manifolds.RecoveredMetric(_two_layer(), atol=-1.0),
        ValueError,
        r"`atol` must be positive .*got -1\.0",
    ),
    (
        "RecoveredMetric/max_steps str",
        lambda: manifolds.RecoveredMetric(_two_layer(), max_steps="10"),
        VALUE_OR_TYPE,
        r"max_steps",
    ),
    (
        "RecoveredMetric/throw str",
        lambda: manifolds.RecoveredMetric(_two_layer(), throw="yes"),
        TypeError,
        r"throw",
    ),
    (
        "RecoveredMetric/not a model",
        lambda: manifolds.RecoveredMetric(jnp.ones(3)),
        TypeError,
        r"model",
    ),
    (
        "RecoveredMetric/z transposed",
        lambda: manifolds.RecoveredMetric(_two_layer())(_z().T),
        ValueError,
        r"`z` must be shaped like model.lift\(\).*\(3, 4\).*got.*\(4, 3\)",
    ),
    (
        "RecoveredMetric/z nan",
        lambda: manifolds.RecoveredMetric(_two_layer())(_z().at[0, 0].set(jnp.nan)),
        ValueError,
        r"`z` must be finite, got non-finite entries",
    ),
    (
        "RecoveredMetric/z nan under jit",
        # One failure channel by design (test_recovered_metric): the result code, whose
        # message names a non-finite z among the causes.
        lambda: _jit_K_nan(manifolds.RecoveredMetric(_two_layer()), _z()),
        eqx.EquinoxRuntimeError,
        r"no theta with phi.*be non-finite",
    ),
    (
        "mirror_flow_test/K not callable",
        lambda: manifolds.mirror_flow_test(3, jnp.ones(3)),
        TypeError,
        r"`?K`?",
    ),
    (
        "mirror_flow_test/K not an operator",
        lambda: manifolds.mirror_flow_test(lambda z: z, jnp.ones(3)),
        TypeError,
        r"`K\(z\)` must return a lineax linear operator, got ShapeDtypeStruct",
    ),
    (
        "mirror_flow_test/rtol nan",
        lambda: manifolds.mirror_flow_test(
            manifolds.intrinsic_metric(_diagonal()), jnp.ones(3), rtol=NAN
        ),
        ValueError,
        r"`rtol` .*got nan",
    ),
    (
        "mirror_flow_test/z nan",
        lambda: manifolds.mirror_flow_test(
            manifolds.intrinsic_metric(_diagonal()), jnp.full(3, jnp.nan)
        ),
        ValueError,
        r"`z` must have finite entries, got non-finite",
    ),
    (
        "mirror_flow_test/z wrong shape",
        lambda: manifolds.mirror_flow_test(manifolds.intrinsic_metric(_diagonal()), jnp.ones(4)),
        ValueError,
        r"Evaluating `K\(z\)` failed: `z` must have shape \(3,\)",
    ),
    (
        "mirror_flow_test/z str",
        lambda: manifolds.mirror_flow_test(manifolds.intrinsic_metric(_diagonal()), "z"),
        TypeError,
        r"`?z`?",
    ),
    # --- flows: euclidean_flow -------------------------------------------------------------
    (
        "euclidean_flow/t1 str",
        lambda: flows.euclidean_flow(_two_layer(), _loss, 0.0, "1.0"),
        TypeError,
        r"t1",
    ),
    (
        "euclidean_flow/t1 nan",
        lambda: flows.euclidean_flow(_two_layer(), _loss, 0.0, NAN),
        ValueError,
        r"`t1` must be finite, got nan",
    ),
    (
        "euclidean_flow/t1 before t0",
        lambda: flows.euclidean_flow(_two_layer(), _loss, 1.0, 0.5),
        ValueError,
        r"`t1` must be greater than `t0` = 1\.0, got 0\.5",
    ),
    (
        "euclidean_flow/nan loss",
        lambda: flows.euclidean_flow(_two_layer(), _nan_loss, 0.0, 1.0),
        eqx.EquinoxRuntimeError,
        r"non-finite \(inf or nan\)",
    ),
    (
        "euclidean_flow/nan parameters",
        lambda: flows.euclidean_flow(_with_nan(_two_layer()), _loss, 0.0, 1.0),
        eqx.EquinoxRuntimeError,
        r"non-finite \(inf or nan\)",
    ),
    (
        "euclidean_flow/nan parameters under jit",
        lambda: eqx.filter_jit(lambda m: flows.euclidean_flow(m, _loss, 0.0, 1.0).final)(
            _with_nan(_two_layer())
        ),
        eqx.EquinoxRuntimeError,
        r"non-finite \(inf or nan\)",
    ),
    ("euclidean_flow/max_steps str", lambda: _flow(max_steps="100"), VALUE_OR_TYPE, r"max_steps"),
    ("euclidean_flow/throw str", lambda: _flow(throw="yes"), TypeError, r"throw"),
    (
        "euclidean_flow/rtol nan",
        lambda: _flow(stepsize_controller=dfx.PIDController(rtol=NAN, atol=1e-8)),
        ValueError,
        r"`stepsize_controller.rtol` must lie in \(0, 1\), got nan",
    ),
    (
        "euclidean_flow/rtol 2",
        lambda: _flow(stepsize_controller=dfx.PIDController(rtol=2.0, atol=1e-8)),
        ValueError,
        r"`stepsize_controller.rtol` must lie in .*got 2\.0",
    ),
    (
        "euclidean_flow/rtol 1e-300",
        lambda: _flow(stepsize_controller=dfx.PIDController(rtol=1e-300, atol=1e-8)),
        ValueError,
        r"`stepsize_controller.rtol` must lie in \(0, 1\) above the machine epsilon 2.22e-16 of float64, got 1e-300",
    ),
    (
        "euclidean_flow/rtol str",
        lambda: _flow(stepsize_controller=dfx.PIDController(rtol="1e-8", atol=1e-8)),
        TypeError,
        r"`stepsize_controller.rtol` must be a real scalar, got '1e-8'",
    ),
    (
        "euclidean_flow/f not callable",
        lambda: flows.euclidean_flow(_two_layer(), 3, 0.0, 1.0),
        TypeError,
        r"`?f`?",
    ),
    (
        "euclidean_flow/f not scalar",
        lambda: flows.euclidean_flow(_two_layer(), lambda z, a: z, 0.0, 1.0),
        ValueError,
        r"`f` must return a scalar loss, got a value of shape \(3, 4\)",
    ),
    (
        "euclidean_flow/model not a model",
        lambda: flows.euclidean_flow("m", _loss, 0.0, 1.0),
        TypeError,
        r"model",
    ),
    ("euclidean_flow/saveat str", lambda: _flow(saveat="t1"), TypeError, r"saveat"),
    (
        "euclidean_flow/ts outside",
        lambda: _flow(saveat=flows.SaveAt(ts=[0.5, 2.0])),
        ValueError,
        r"`SaveAt\(ts=...\)` must lie in \[t0, t1\] = \[0\.0, 1\.0\], got \[0\.5, 2\.0\]",
    ),
    ("euclidean_flow/solver str", lambda: _flow(solver="tsit5"), TypeError, r"solver"),
    # --- flows: intrinsic_flow -------------------------------------------------------------
    (
        "intrinsic_flow/z0 transposed",
        lambda: _iflow(z0=_z().T),
        ValueError,
        r"Evaluating `K\(z0\)` failed: `z` must have shape \(3, 4\).*got shape \(4, 3\)",
    ),
    (
        "intrinsic_flow/z0 nan",
        lambda: _iflow(z0=_z().at[0, 0].set(jnp.nan)),
        ValueError,
        r"`z0` must be finite, got an array of shape \(3, 4\) with 1 non-finite entries",
    ),
    (
        "intrinsic_flow/z0 nan under jit",
        lambda: eqx.filter_jit(lambda z: _iflow(z0=z).final)(_z().at[0, 0].set(jnp.nan)),
        eqx.EquinoxRuntimeError,
        r"`z0` must have finite entries \(got non-finite",
    ),
    ("intrinsic_flow/z0 str", lambda: _iflow(z0="z"), TypeError, r"z0"),
    (
        "intrinsic_flow/z0 int",
        lambda: _iflow(z0=jnp.ones((3, 4), int)),
        TypeError,
        r"`z0` must be a \(PyTree of\) floating array\(s\), got dtypes \['int64'\]",
    ),
    ("intrinsic_flow/K not callable", lambda: _iflow(K=3), TypeError, r"`?K`?"),
    (
        "intrinsic_flow/K not an operator",
        lambda: _iflow(K=lambda z: z),
        TypeError,
        r"`K\(z\)` must return a lineax linear operator .*got ShapeDtypeStruct",
    ),
    (
        "intrinsic_flow/K acts on other shapes",
        lambda: _iflow(K=lambda z: lx.MatrixLinearOperator(jnp.eye(3))),
        ValueError,
        r"`K\(z0\)` acts on arrays shaped .*\(3,\).* but `z0` is shaped .*\(3, 4\)",
    ),
    (
        "intrinsic_flow/nan loss",
        lambda: _iflow(f=_nan_loss),
        eqx.EquinoxRuntimeError,
        r"non-finite \(inf or nan\)",
    ),
    (
        "intrinsic_flow/t1 str",
        lambda: flows.intrinsic_flow(_K(), _loss, 0.0, "1.0", _z()),
        TypeError,
        r"t1",
    ),
    ("intrinsic_flow/dt0 str", lambda: _iflow(dt0="0.1"), TypeError, r"dt0"),
    # --- flows: ensembles, checkpoints, SaveAt ------------------------------------------------
    (
        "euclidean_ensemble/sharding str",
        lambda: flows.euclidean_ensemble(_stacked(), _loss, 0.0, 1.0, sharding="batch"),
        TypeError,
        r"sharding",
    ),
    (
        "euclidean_ensemble/unbatched models",
        lambda: flows.euclidean_ensemble(_two_layer(), _loss, 0.0, 1.0),
        ValueError,
        r"`models` must have a leading batch axis of one common size .* got leading sizes \['3', '4'\]",
    ),
    (
        "euclidean_ensemble/t1 str",
        lambda: flows.euclidean_ensemble(_stacked(), _loss, 0.0, "1"),
        TypeError,
        r"t1",
    ),
    (
        "intrinsic_ensemble/sharding str",
        lambda: flows.intrinsic_ensemble(
            _K(), _loss, 0.0, 1.0, jnp.stack([_z(), _z()]), sharding="batch"
        ),
        TypeError,
        r"sharding",
    ),
    (
        "intrinsic_ensemble/K not callable",
        lambda: flows.intrinsic_ensemble(3, _loss, 0.0, 1.0, jnp.stack([_z(), _z()])),
        TypeError,
        r"`?K`?",
    ),
    (
        "intrinsic_ensemble/batch sizes differ",
        lambda: flows.intrinsic_ensemble(
            flows.stack([_K(), _K(), _K()]), _loss, 0.0, 1.0, jnp.stack([_z(), _z()])
        ),
        ValueError,
        r"`K` has a batch of 3 metrics but `z0` has 2 states",
    ),
    (
        "intrinsic_ensemble/z0 scalar",
        lambda: flows.intrinsic_ensemble(_K(), _loss, 0.0, 1.0, jnp.asarray(1.0)),
        ValueError,
        r"`z0` must have a leading batch axis",
    ),
    (
        "stack/empty",
        lambda: flows.stack([]),
        ValueError,
        r"`trees` must contain at least one tree, got an empty sequence",
    ),
    (
        "stack/different shapes",
        lambda: flows.stack([_two_layer(), models.TwoLayerLinear.random(KEY, 2, 2, 2)]),
        ValueError,
        r"`trees\[1\]` has array shapes",
    ),
    (
        "resumable_euclidean_flow/num_chunks 0",
        lambda: flows.resumable_euclidean_flow(
            _two_layer(), _loss, 0.0, 1.0, path="/nonexistent/x.eqx", num_chunks=0
        ),
        ValueError,
        r"`num_chunks` must be a positive integer, got 0",
    ),
    (
        "resumable_euclidean_flow/path int",
        lambda: flows.resumable_euclidean_flow(_two_layer(), _loss, 0.0, 1.0, path=3),
        TypeError,
        r"path",
    ),
    (
        "resumable_euclidean_flow/t1 nan",
        lambda: flows.resumable_euclidean_flow(
            _two_layer(), _loss, 0.0, NAN, path="/nonexistent/x.eqx"
        ),
        ValueError,
        r"`t1` must be finite, got nan",
    ),
    ("SaveAt/ts str", lambda: flows.SaveAt(ts="0.5"), TypeError, r"ts"),
    ("SaveAt/ts matrix", lambda: flows.SaveAt(ts=[[0.1, 0.2]]), VALUE_OR_TYPE, r"ts"),
    ("SaveAt/t0 str", lambda: flows.SaveAt(t0="yes"), TypeError, r"t0"),
    (
        "SaveAt/nothing",
        lambda: flows.SaveAt(),
        ValueError,
        r"`SaveAt` saves nothing: set `t0`, `t1` or `ts`",
    ),
    (
        "OutputLoss/inputs vector",
        lambda: flows.OutputLoss(jnp.ones(3), jnp.ones((3, 1))),
        VALUE_OR_TYPE,
        r"inputs",
    ),
]

FOREIGN = (
    "Closure-converted",
    "could not broadcast",
    "has no attribute",
    "invalid PRNG key data",
    "maximum number of solver steps",
)


@pytest.mark.parametrize(
    "thunk,exception,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_named(thunk, exception, pattern):
    with pytest.raises(exception, match=pattern) as info:
        out = thunk()
        jax.block_until_ready(eqx.filter(out, eqx.is_array))
    message = str(info.value)
    assert not isinstance(info.value, (AttributeError, IndexError))
    assert not any(foreign in message for foreign in FOREIGN), message


def test_table_is_large():
    assert len(CASES) >= 60
