import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import flows
import manifolds
import models

from .helpers import intrinsic_configs, quadratic_loss


def _regression_loss(key, z_shape):
    if len(z_shape) == 2:
        kx, ky = jax.random.split(key)
        X = jax.random.normal(kx, (z_shape[1], 10))
        Y = jax.random.normal(ky, (z_shape[0], 10))
        return lambda z, args: 0.5 * jnp.mean((z @ X - Y) ** 2)
    target = jax.random.normal(key, z_shape)
    return lambda z, args: 0.5 * jnp.sum((z - target) ** 2)


TIGHT = dfx.PIDController(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_intrinsic_flow_reproduces_euclidean_flow(name, getkey):
    model = intrinsic_configs[name](getkey())
    f = _regression_loss(getkey(), model.lift().shape)
    ts = jnp.linspace(0.0, 4.0, 9)
    opts = dict(saveat=flows.SaveAt(ts=ts), stepsize_controller=TIGHT)
    euc = flows.euclidean_flow(model, f, 0.0, 4.0, **opts)
    K = manifolds.intrinsic_metric(model)
    intr = flows.intrinsic_flow(K, f, 0.0, 4.0, model.lift(), **opts)
    assert euc.successful and intr.successful
    # The flows really moved (the comparison below is not vacuous).
    assert float(euc.losses[-1]) < float(euc.losses[0])
    assert float(jnp.max(jnp.abs(euc.zs[-1] - euc.zs[0]))) > 1e-3 * float(
        jnp.max(jnp.abs(euc.zs[0]))
    )
    assert float(jnp.max(flows.relative_deviation(euc, intr))) <= 1e-8
    assert float(euc.conservation_drift) <= 1e-8


def test_non_intrinsic_init_deviates(getkey):
    # Control: the balanced-K flow started from a generic (unbalanced) init must not
    # reproduce φ(θ(t)) — the agreement above is not automatic.
    model = models.TwoLayerLinear.random(getkey(), 3, 3, 3)
    f = _regression_loss(getkey(), (3, 3))
    ts = jnp.linspace(0.0, 4.0, 9)
    euc = flows.euclidean_flow(model, f, 0.0, 4.0, saveat=flows.SaveAt(ts=ts))
    K = manifolds.TwoLayerLinearMetric(0.0, 3)
    intr = flows.intrinsic_flow(K, f, 0.0, 4.0, model.lift(), saveat=flows.SaveAt(ts=ts))
    assert float(jnp.max(flows.relative_deviation(euc, intr))) > 1e-3


def test_solution_contents(getkey):
    model = models.DeepLinear.random(getkey(), (2, 3, 2))
    f = quadratic_loss(getkey(), jax.eval_shape(model.lift))
    ts = jnp.linspace(0.0, 1.0, 4)
    sol = flows.euclidean_flow(model, f, 0.0, 1.0, saveat=flows.SaveAt(ts=ts, params=True))
    assert np.allclose(sol.ts, ts)
    assert sol.zs.shape == (4, 2, 2) and sol.losses.shape == (4,)
    assert [h.shape for h in sol.conserved] == [(4, 3, 3)]
    assert isinstance(sol.params, models.DeepLinear)
    last = jax.tree.map(lambda x: x[-1], sol.params)
    assert np.allclose(last.lift(), sol.zs[-1], atol=1e-12)
    assert np.allclose(sol.losses[-1], f(sol.zs[-1]))
    assert np.allclose(sol.zs[0], model.lift())
    # The model at t1 is returned whatever is saved.
    assert isinstance(sol.final, models.DeepLinear)
    assert np.allclose(sol.final.lift(), sol.zs[-1], atol=1e-12)
    assert float(sol.t0) == 0.0 and float(sol.t1) == 1.0
    default = flows.euclidean_flow(model, f, 0.0, 1.0)
    assert np.allclose(default.ts, [0.0, 1.0]) and default.params is None
    assert sol.message == "" and bool(sol.succeeded)


def test_max_steps_reported_not_truncated(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    f = quadratic_loss(getkey(), jax.eval_shape(model.lift))
    ts = jnp.linspace(0.0, 10.0, 5)
    saveat = flows.SaveAt(ts=ts)
    sol = flows.euclidean_flow(model, f, 0.0, 10.0, saveat=saveat, max_steps=3, throw=False)
    assert not sol.successful
    assert "maximum number of solver steps" in sol.message
    assert np.all(np.isinf(np.asarray(sol.zs[-1])))  # unsaved times are marked, not faked
    with pytest.raises(eqx.EquinoxRuntimeError, match="maximum number of solver steps"):
        flows.euclidean_flow(model, f, 0.0, 10.0, saveat=saveat, max_steps=3)


def test_nonfinite_state_reported(getkey):
    # f(z) = -z⁴/4 blows up in finite time under the flow: the solve must fail loudly.
    model = models.DiagonalLinear([jnp.array(1.5), jnp.array(1.5)])
    f = lambda z, args: -(z**4) / 4
    K = manifolds.intrinsic_metric(model)
    sol = flows.intrinsic_flow(K, f, 0.0, 10.0, model.lift(), throw=False, max_steps=2000)
    assert not sol.successful
    assert sol.message
    with pytest.raises(eqx.EquinoxRuntimeError):
        flows.intrinsic_flow(K, f, 0.0, 10.0, model.lift(), max_steps=2000)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t1=0.0), "`t1` must be greater"),
        (
            dict(stepsize_controller=dfx.PIDController(rtol=-1.0, atol=1e-8)),
            r"`stepsize_controller.rtol` must lie in \(0, 1\)",
        ),
        (dict(saveat=flows.SaveAt(ts=[0.0, 2.0])), r"must lie in \[t0, t1\]"),
        (dict(saveat=flows.SaveAt(ts=[0.5, 0.2])), "non-decreasing"),
        (dict(max_steps=0), "`max_steps`"),
        (dict(stepsize_controller=dfx.ConstantStepSize()), "pass `dt0`"),
        (dict(adjoint=dfx.BacksolveAdjoint()), "BacksolveAdjoint"),
        (dict(t1=float("nan")), "`t1` must be finite"),
    ],
)
def test_bad_options(kwargs, match, getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    f = lambda z, args: jnp.sum(z**2)
    kwargs = {"t1": 1.0, **kwargs}
    t1 = kwargs.pop("t1")
    with pytest.raises(ValueError, match=match):
        flows.euclidean_flow(model, f, 0.0, t1, **kwargs)
    K = manifolds.TwoLayerLinearMetric(0.0, 2)
    with pytest.raises(ValueError, match=match):
        flows.intrinsic_flow(K, f, 0.0, t1, model.lift(), **kwargs)


def test_bad_loss_and_state(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    with pytest.raises(ValueError, match="scalar loss"):
        flows.euclidean_flow(model, lambda z, args: z, 0.0, 1.0)
    with pytest.raises(TypeError, match="(?i)callable"):
        flows.euclidean_flow(model, 3.0, 0.0, 1.0)
    K = manifolds.TwoLayerLinearMetric(0.0, 2)
    f = lambda z, args: jnp.sum(z)
    with pytest.raises(ValueError, match="`z0` must be finite"):
        flows.intrinsic_flow(K, f, 0.0, 1.0, jnp.full((2, 2), jnp.nan))
    fixed = lambda z: lx.IdentityLinearOperator(jax.ShapeDtypeStruct((3, 2), z.dtype))
    with pytest.raises(ValueError, match="not transposed"):
        flows.intrinsic_flow(fixed, f, 0.0, 1.0, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="t1"):
        flows.euclidean_flow(model, f, 0.0, "1.0")
    with pytest.raises(TypeError, match="solver"):
        flows.euclidean_flow(model, f, 0.0, 1.0, solver="tsit5")
    with pytest.raises(TypeError, match="saveat"):
        flows.euclidean_flow(model, f, 0.0, 1.0, saveat=dfx.SaveAt(t1=True))
    with pytest.raises(TypeError, match="[`']K[`']"):
        flows.intrinsic_flow(3.0, f, 0.0, 1.0, jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="lineax linear operator"):
        flows.intrinsic_flow(lambda z: z, f, 0.0, 1.0, jnp.ones((2, 2)))


def test_nonfinite_initial_state_is_named(getkey):
    # A NaN parameter is reported as a non-finite start, eagerly and under jit, not as
    # "maximum number of solver steps".
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    bad = eqx.tree_at(lambda m: m.U, model, model.U.at[0, 0].set(jnp.nan))
    f = lambda z, args: jnp.sum(z**2)
    sol = flows.euclidean_flow(bad, f, 0.0, 1.0, throw=False)
    assert sol.result == flows.RESULTS.nonfinite_initial_state
    assert "non-finite" in sol.message
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        eqx.filter_jit(lambda m: flows.euclidean_flow(m, f, 0.0, 1.0).losses)(bad)
    nan_loss = lambda z, args: jnp.sum(z) * jnp.nan
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        flows.euclidean_flow(model, nan_loss, 0.0, 1.0)


def test_gradient_through_the_flow_matches_finite_differences(getkey):
    # d/ds of the final loss when the init is scaled by s, with the default
    # RecursiveCheckpointAdjoint, against a central difference.
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 3)
    f = quadratic_loss(getkey(), jax.eval_shape(model.lift))

    def final_loss(s):
        scaled = jax.tree.map(lambda x: s * x, model)
        tight = dfx.PIDController(rtol=1e-12, atol=1e-12)
        return flows.euclidean_flow(scaled, f, 0.0, 1.0, stepsize_controller=tight).losses[-1]

    grad = jax.grad(final_loss)(1.0)
    h = 1e-5
    fd = (final_loss(1.0 + h) - final_loss(1.0 - h)) / (2 * h)
    assert abs(grad - fd) <= 1e-6 * abs(fd)


def test_flows_vmap_over_inits(getkey):
    keys = jax.random.split(getkey(), 3)
    batch = jax.vmap(lambda k: models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 2, 0.5))(keys)
    f = lambda z, args: 0.5 * jnp.sum((z - jnp.eye(2)) ** 2)
    sols = jax.vmap(lambda m: flows.euclidean_flow(m, f, 0.0, 1.0).zs)(batch)
    assert sols.shape == (3, 2, 2, 2)
    for i, key in enumerate(keys):
        single = flows.euclidean_flow(
            models.TwoLayerLinear.relaxed_balanced(key, 2, 2, 2, 0.5), f, 0.0, 1.0
        ).zs
        assert np.allclose(sols[i], single, atol=1e-10)


def test_default_controller_works_in_float32(getkey):
    # The default tolerances (1e-8) are below float32's ε: the default becomes 100 ε there,
    # while an explicit rtol below ε is still refused. Run in a subprocess without x64.
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp, diffrax as dfx, flows, models\n"
        "m = models.TwoLayerLinear.relaxed_balanced(jax.random.key(0), 2, 2, 2, 0.5)\n"
        "f = lambda z, y: 0.5 * jnp.sum((z - y) ** 2)\n"
        "s = flows.euclidean_flow(m, f, 0.0, 1.0, args=jnp.ones((2, 2)))\n"
        "assert s.successful and s.losses.dtype == jnp.float32, s.message\n"
        "try:\n"
        "    flows.euclidean_flow(m, f, 0.0, 1.0, args=jnp.ones((2, 2)),\n"
        "        stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8))\n"
        "except ValueError as e:\n"
        "    assert 'machine epsilon' in str(e)\n"
        "else:\n"
        "    raise AssertionError('rtol below eps accepted')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
