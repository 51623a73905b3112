"""Both flows of a ReLU network on data, across changes of activation pattern."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
import manifolds
import models

OPTS = dict(stepsize_controller=dfx.PIDController(rtol=1e-11, atol=1e-11))


def _dag_with_skips(key, bias):
    # 2 inputs (0, 1), hidden 2..5 in two layers (2, 3) -> (4, 5), output 6; skips
    # input -> second hidden layer, first hidden layer -> output, input -> output.
    edges = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 4), (3, 4), (2, 5), (3, 5)]
    edges += [(0, 4), (1, 5), (4, 6), (5, 6), (2, 6), (0, 6)]
    return models.ReLUDAG.random(key, 2, 4, 1, sorted(edges), bias=bias)


# name -> (builder, seed, t1). The seeds are fixed and chosen so that, before t1, the
# activation pattern on the data changes at least once (checked in the test, not left
# to chance) while no weight crosses zero: the intrinsic metric lives on the dense set
# where every weight is nonzero, with the weight signs of θ₀ (see
# `manifolds.AbstractReLUMetric`), so a crossing needs `with_signs_from` and is out
# of scope here.
ARCHITECTURES = {
    "mlp-2-5-1": (lambda k: models.ReLUNetwork.random(k, (2, 5, 1)), 2, 6.0),
    "mlp-bias-3-4-2": (
        lambda k: models.ReLUNetwork.random(k, (3, 4, 2), bias=True, scale=2.0),
        8,
        0.12,
    ),
    "mlp-2-3-3-1": (lambda k: models.ReLUNetwork.random(k, (2, 3, 3, 1), scale=2.0), 4, 6.0),
    "dag-skips-bias": (lambda k: _dag_with_skips(k, True), 2, 6.0),
}


def _problem(name, seed=None, num_samples=12):
    build, default_seed, t1 = ARCHITECTURES[name]
    seed = default_seed if seed is None else seed
    kstudent, kteacher, kx = jax.random.split(jax.random.key(seed), 3)
    student = build(kstudent)
    teacher = build(kteacher)
    inputs = jax.random.normal(kx, (num_samples, _num_inputs(student)))
    return student, flows.OutputLoss(inputs, jax.vmap(teacher)(inputs)), t1


def _num_inputs(net):
    return net.n_inputs


def _pattern(net, inputs):
    return np.asarray(jax.vmap(net.activation_pattern)(inputs))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_flows_agree_across_pattern_changes(name):
    net, loss, t1 = _problem(name)
    ts = jnp.linspace(0.0, t1, 25)
    saveat = flows.SaveAt(ts=ts, params=True)
    euc = flows.euclidean_flow(net, loss, 0.0, t1, saveat=saveat, **OPTS)
    K = manifolds.intrinsic_metric(net)
    intr = flows.intrinsic_flow(K, loss, 0.0, t1, net.lift(), saveat=flows.SaveAt(ts=ts), **OPTS)
    assert euc.successful and intr.successful
    # Not vacuous: the pattern on the data changed, and the loss went down.
    assert len(euc.event_times) >= 1
    final = euc.final
    last = jax.tree.map(lambda x: x[-1], euc.params)
    assert all(map(np.allclose, jax.tree.leaves(final.lift()), jax.tree.leaves(last.lift())))
    assert np.any(_pattern(final, loss.inputs) != _pattern(net, loss.inputs))
    assert float(euc.losses[-1]) < float(euc.losses[0])
    # Both flows see the same changes at the same times. An event time is as accurate
    # as the state divided by the crossing's slope: at rtol = 1e-11 the Euclidean
    # flow's own event times move by up to ~1e-7 against a 1e-13 solve (measured on
    # these problems), so 1e-6 is the solver-tolerance bound, not a loosened one.
    np.testing.assert_allclose(intr.event_times, euc.event_times, rtol=0, atol=1e-6)
    deviation = np.asarray(flows.relative_deviation(euc, intr))
    before = np.asarray(ts) < float(euc.event_times[0])
    assert deviation[before].max() <= 1e-8
    assert deviation.max() <= 1e-7
    np.testing.assert_allclose(intr.losses, euc.losses, rtol=1e-7, atol=1e-12)
    assert float(euc.conservation_drift) <= 1e-8


def test_euclidean_flow_matches_a_solve_without_events():
    # An independent reference: one plain diffeqsolve of θ' = −∇ℓ(θ), whose adaptive
    # steps are rejected and shrunk around each kink of the field instead of stopping
    # at it. At rtol = atol = 1e-12 its own error at the kinks is ~1e-9.
    net, loss, T1 = _problem("mlp-2-5-1")
    ts = jnp.linspace(0.0, T1, 13)
    euc = flows.euclidean_flow(net, loss, 0.0, T1, saveat=flows.SaveAt(ts=ts), **OPTS)
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def field(t, p, args):
        g = jax.grad(lambda q: loss(eqx.combine(q, static)))(p)
        return jax.tree.map(jnp.negative, g)

    ref = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Tsit5(),
        0.0,
        T1,
        None,
        params,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=200_000,
    )
    z_ref = jax.vmap(lambda p: eqx.combine(p, static).lift())(ref.ys)
    for a, b in zip(jax.tree.leaves(euc.zs), jax.tree.leaves(z_ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    assert len(euc.event_times) >= 1


def test_too_many_pattern_changes_is_reported():
    net, loss, T1 = _problem("mlp-2-5-1")
    with pytest.raises(eqx.EquinoxRuntimeError, match="max_events"):
        flows.euclidean_flow(net, loss, 0.0, T1, max_events=0, **OPTS)
    sol = flows.euclidean_flow(net, loss, 0.0, T1, max_events=0, throw=False, **OPTS)
    assert not sol.successful
    assert sol.result == flows.RESULTS.max_events_reached
    assert len(sol.event_times) == 1
    assert np.all(np.isinf(np.asarray(sol.losses[-1])))


def test_output_loss_errors():
    with pytest.raises(ValueError, match="samples"):
        flows.OutputLoss(jnp.zeros((3, 2)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="2-D"):
        flows.OutputLoss(jnp.zeros(3), jnp.zeros((3, 1)))
    loss = flows.OutputLoss(jnp.ones((3, 2)), jnp.zeros((3, 1)))
    with pytest.raises(TypeError, match="callable"):
        flows.euclidean_flow(
            models.DiagonalLinear.random(jax.random.key(0), (2,), 2), loss, 0.0, 1.0
        )
    uv = models.DiagonalLinear.random(jax.random.key(0), (2,), 2)
    with pytest.raises(TypeError, match="ReLU"):
        flows.intrinsic_flow(manifolds.intrinsic_metric(uv), loss, 0.0, 1.0, uv.lift())
    net, loss, _ = _problem("mlp-2-5-1")
    with pytest.raises(TypeError, match="host"):  # the restarts are a host loop
        jax.jit(lambda t1: flows.euclidean_flow(net, loss, 0.0, t1).losses)(1.0)
