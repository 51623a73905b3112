"""Ensembles of flows: vmap over initializations, per-member failures, sharding."""

import os
import subprocess
import sys
import textwrap

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
import manifolds
import models

from .helpers import count_compilations


def _members(key, lams):
    # Square (n = r = m): the closed form is exact for every λ (no projector branch).
    keys = jax.random.split(key, len(lams))
    return [models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 2, lam) for k, lam in zip(keys, lams)]


def _loss(key):
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (2, 6))
    Y = jax.random.normal(ky, (2, 6))
    return lambda z, args: 0.5 * jnp.mean((z @ X - Y) ** 2)


def test_ensemble_equals_single_flows(getkey):
    members = _members(getkey(), [-0.8, 0.0, 0.3, 1.1])
    f = _loss(getkey())
    ts = jnp.linspace(0.0, 3.0, 7)
    opts = dict(
        saveat=flows.SaveAt(ts=ts), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)
    )
    euc = flows.euclidean_ensemble(flows.stack(members), f, 0.0, 3.0, **opts)
    metrics = flows.stack([manifolds.intrinsic_metric(m) for m in members])
    intr = flows.intrinsic_ensemble(
        metrics, f, 0.0, 3.0, flows.stack([m.lift() for m in members]), **opts
    )
    assert euc.zs.shape == (4, 7, 2, 2) and euc.succeeded.shape == (4,)
    assert euc.successful and intr.successful
    for b, m in enumerate(members):
        single = flows.euclidean_flow(m, f, 0.0, 3.0, **opts)
        np.testing.assert_allclose(euc.zs[b], single.zs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(euc.conserved[b], single.conserved, rtol=1e-12, atol=1e-12)
        assert int(euc.stats["num_steps"][b]) == int(single.stats["num_steps"])
    # Every member follows its own level set's intrinsic flow.
    dev = jax.vmap(lambda a, b: jnp.max(jnp.abs(a - b)))(euc.zs, intr.zs)
    assert float(jnp.max(dev)) <= 1e-8 * float(jnp.max(jnp.abs(euc.zs)))
    # Not vacuous: the members end in different places.
    assert float(jnp.min(jnp.abs(euc.zs[0, -1] - euc.zs[3, -1]).max())) > 1e-3


def test_repeated_ensemble_reuses_its_compilation(getkey):
    # A sweep calls the ensemble again and again with new members of the same shapes:
    # nothing is traced or compiled again, also with times and tolerances given as arrays.
    f = _loss(getkey())
    opts = dict(
        saveat=flows.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)),
        stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-9),
    )
    first = flows.euclidean_ensemble(
        flows.stack(_members(getkey(), [0.1, 0.5])), f, 0.0, 2.0, **opts
    )
    K = flows.stack([manifolds.intrinsic_metric(m) for m in _members(getkey(), [0.1, 0.5])])
    z0 = flows.stack([m.lift() for m in _members(getkey(), [0.1, 0.5])])
    flows.intrinsic_ensemble(K, f, 0.0, jnp.asarray(2.0), z0, **opts)
    # New times and tolerances are new values, not a new program.
    opts = dict(
        saveat=flows.SaveAt(ts=jnp.linspace(0.0, 2.5, 5)),
        stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
    )
    members = _members(getkey(), [-0.3, 0.7])
    with count_compilations() as counter:
        again = flows.euclidean_ensemble(flows.stack(members), f, 0.0, jnp.asarray(2.5), **opts)
        intr = flows.intrinsic_ensemble(K, f, 0.0, 2.5, z0, **opts)
        jax.block_until_ready((again.zs, intr.zs))
    assert counter.count == 0
    assert again.successful and intr.successful
    assert float(jnp.max(jnp.abs(again.zs - first.zs))) > 1e-3  # new members, new flows
    single = flows.euclidean_flow(members[1], f, 0.0, 2.5, **opts)
    np.testing.assert_allclose(again.zs[1], single.zs, rtol=1e-12, atol=1e-12)


def test_failed_member_is_reported_not_fatal():
    # z = uv with u = v (K(z) = 2|z|) and f(z) = -z^4/4: z' = 2 z^4 blows up at
    # t = 1/(6 z0^3), i.e. t = 0.015 for z0 = 2.25 but t = 2604 for z0 = 0.04 (t1 = 2).
    members = [models.DiagonalLinear([jnp.array([s]), jnp.array([s])]) for s in (0.2, 1.5)]
    sol = flows.euclidean_ensemble(
        flows.stack(members), lambda z, args: -jnp.sum(z**4) / 4, 0.0, 2.0, max_steps=2_000
    )
    assert sol.succeeded.tolist() == [True, False]
    assert not sol.successful
    assert "member 1" in sol.message and "member 0" not in sol.message
    assert np.all(np.isfinite(sol.zs[0]))


def test_stack_errors(getkey):
    with pytest.raises(ValueError, match="empty"):
        flows.stack([])
    a = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    b = models.TwoLayerLinear.random(getkey(), 2, 3, 4)
    with pytest.raises(ValueError, match="trees\\[1\\]"):
        flows.stack([a, b])
    with pytest.raises(ValueError, match="leading batch axis"):
        flows.euclidean_ensemble(b, lambda z, args: jnp.sum(z**2), 0.0, 1.0)  # U: 2x3, V: 4x3
    c = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    with pytest.raises(ValueError, match="not a valid model"):
        flows.euclidean_ensemble(c, lambda z, args: jnp.sum(z**2), 0.0, 1.0)
    with pytest.raises(TypeError, match="sharding"):
        flows.euclidean_ensemble(
            flows.stack([a, a]), lambda z, args: jnp.sum(z**2), 0.0, 1.0, sharding="batch"
        )


SHARDED = textwrap.dedent(
    """
    import diffrax as dfx, jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    import flows, models
    assert len(jax.devices()) == 4, jax.devices()
    keys = jax.random.split(jax.random.key(0), 6)
    members = [
        models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 3, lam)
        for k, lam in zip(keys, np.linspace(-1, 1, 6))
    ]
    X = jax.random.normal(jax.random.key(1), (3, 6)); Y = jax.random.normal(jax.random.key(2), (2, 6))
    f = lambda z, args: 0.5 * jnp.mean((z @ X - Y) ** 2)
    batch = flows.stack(members)
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))
    opts = dict(saveat=flows.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10))
    one = flows.euclidean_ensemble(batch, f, 0.0, 2.0, **opts)
    many = flows.euclidean_ensemble(batch, f, 0.0, 2.0, sharding=sharding, **opts)
    assert many.zs.shape == (6, 5, 2, 3), many.zs.shape
    assert many.successful and one.successful
    print("maxdiff", float(jnp.max(jnp.abs(one.zs - many.zs))))
    # The same steps; values equal up to rounding (XLA vectorises a local batch of 2
    # differently from one of 6, so bitwise equality is not guaranteed).
    np.testing.assert_array_equal(one.stats["num_steps"], many.stats["num_steps"])
    np.testing.assert_allclose(np.asarray(one.zs), np.asarray(many.zs), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.asarray(one.losses), np.asarray(many.losses), rtol=1e-13)
    # With a batch that fills the mesh, the solutions stay laid out over the 4 devices.
    full = flows.euclidean_ensemble(flows.stack(members + members[:2]), f, 0.0, 2.0, sharding=sharding, **opts)
    assert full.zs.sharding.spec == PartitionSpec("batch"), full.zs.sharding
    np.testing.assert_allclose(np.asarray(full.zs[:6]), np.asarray(one.zs), rtol=1e-13, atol=1e-14)
    # The intrinsic ensemble, one metric per member, on the mesh (each device its own loop).
    import manifolds
    K = flows.stack([manifolds.intrinsic_metric(m) for m in members])
    z0 = flows.stack([m.lift() for m in members])
    i_one = flows.intrinsic_ensemble(K, f, 0.0, 2.0, z0, **opts)
    i_many = flows.intrinsic_ensemble(K, f, 0.0, 2.0, z0, sharding=sharding, **opts)
    assert i_many.successful and i_many.zs.shape == (6, 5, 2, 3)
    np.testing.assert_array_equal(i_one.stats["num_steps"], i_many.stats["num_steps"])
    np.testing.assert_allclose(np.asarray(i_one.zs), np.asarray(i_many.zs), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.asarray(i_many.zs), np.asarray(many.zs), rtol=1e-8, atol=1e-9)
    """
)


def test_sharded_ensemble_is_identical_on_four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "maxdiff" in out.stdout
