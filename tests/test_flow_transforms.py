"""The flows under JAX transformations: jit with traced options, vmap, grad, jacfwd, and
no recompilation when data, times or tolerances change.

References are independent of the code under test: eager calls, Python loops over the
batch, central finite differences.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
import manifolds

from .helpers import count_compilations, intrinsic_configs


def _loss(z, target):
    # Data through `args`: a new target is a new value, not a new function.
    return 0.5 * jnp.sum((z - target) ** 2)


def _tight(tol=1e-12):
    return dfx.PIDController(rtol=tol, atol=tol)


def _problem(key, name="two-layer-3-3-3-bal"):
    k1, k2 = jax.random.split(key)
    model = intrinsic_configs[name](k1)
    target = jax.random.normal(k2, jax.eval_shape(model.lift).shape)
    return model, target


def test_jit_with_traced_times_and_tolerances(getkey):
    model, target = _problem(getkey())
    K = manifolds.intrinsic_metric(model)

    def both(t1, ts, rtol):
        options = dict(
            args=target,
            saveat=flows.SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=rtol),
        )
        euc = flows.euclidean_flow(model, _loss, 0.0, t1, **options)
        intr = flows.intrinsic_flow(K, _loss, 0.0, t1, model.lift(), **options)
        return euc.zs, intr.zs, euc.succeeded

    ts = jnp.linspace(0.0, 1.5, 4)
    jitted = jax.jit(both)(1.5, ts, 1e-10)
    eager = both(1.5, ts, 1e-10)
    for a, b in zip(jitted[:2], eager[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b))))
    assert bool(jitted[2])


def test_no_recompilation_when_data_times_or_tolerances_change(getkey):
    model, target = _problem(getkey())
    K = manifolds.intrinsic_metric(model)
    z0 = model.lift()

    def run(target, t1, ts, tol):
        options = dict(args=target, saveat=flows.SaveAt(ts=ts), stepsize_controller=_tight(tol))
        euc = flows.euclidean_flow(model, _loss, 0.0, t1, **options)
        intr = flows.intrinsic_flow(K, _loss, 0.0, t1, z0, **options)
        return euc, intr

    first = run(target, 1.0, jnp.linspace(0.0, 1.0, 3), 1e-8)
    jax.block_until_ready(first)
    # New values, prepared before counting (their own eager ops compile).
    new = [
        (target + i + 1.0, 1.5 + i, jnp.linspace(0.0, 1.0 + i, 3), 1e-9 * (i + 1)) for i in range(3)
    ]
    jax.block_until_ready(new)
    with count_compilations() as counter:
        for values in new:
            second = run(*values)
            jax.block_until_ready(second)
    assert counter.count == 0
    # ...and the new values were really used.
    assert not np.allclose(second[0].zs, first[0].zs)
    assert float(second[0].t1) == 3.5 and float(second[1].ts[-1]) == 3.0


def test_vmap_over_data_equals_a_loop(getkey):
    model, target = _problem(getkey())
    targets = jnp.stack([target, 2 * target, -target])
    K = manifolds.intrinsic_metric(model)
    options = dict(stepsize_controller=_tight(1e-10))
    batched = jax.vmap(
        lambda y: flows.intrinsic_flow(K, _loss, 0.0, 1.0, model.lift(), args=y, **options).zs
    )(targets)
    for i, y in enumerate(targets):
        single = flows.intrinsic_flow(K, _loss, 0.0, 1.0, model.lift(), args=y, **options).zs
        np.testing.assert_allclose(batched[i], single, rtol=1e-9, atol=1e-9 * np.abs(single).max())


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_grad_of_final_loss_of_euclidean_flow(name, getkey):
    # d/ds of the final loss from the init scaled by s, against a central difference of
    # the flow itself.
    model, target = _problem(getkey(), name)
    options = dict(args=target, stepsize_controller=_tight())

    def final_loss(s):
        scaled = jax.tree.map(lambda x: s * x, model)
        return flows.euclidean_flow(scaled, _loss, 0.0, 1.0, **options).losses[-1]

    h = 1e-5
    grad = jax.grad(final_loss)(1.0)
    fd = (final_loss(1.0 + h) - final_loss(1.0 - h)) / (2 * h)
    print(f"euclidean {name}: |grad - FD| / |FD| = {float(abs(grad - fd) / abs(fd)):.1e}")
    assert abs(grad - fd) <= 1e-6 * abs(fd), (grad, fd)


def _shifted_metric(K, c, shift):
    # K with its conserved values (λ, or the levels Λ of a chain) moved by shift * c.
    leaves, treedef = jax.tree.flatten(eqx.filter(K, eqx.is_inexact_array))
    moved = [leaf + shift * ci for leaf, ci in zip(leaves, c)]
    return eqx.combine(
        jax.tree.unflatten(treedef, moved), eqx.filter(K, eqx.is_inexact_array, inverse=True)
    )


# Where K is smooth in its conserved values too. Not for a balanced deep chain of non-square
# widths: a nonzero λ has no closed form there (and x_min = max(0, −Λ) has a kink at Λ = 0).
_LAM_SMOOTH = sorted(n for n in intrinsic_configs if n != "deep-balanced-2-4-5-2-2")


@pytest.mark.parametrize("name", sorted(intrinsic_configs))
def test_grad_of_final_loss_of_intrinsic_flow(name, getkey):
    # d/ds of the final loss of the intrinsic flow from z0 + s v (v random), and d/dμ with
    # K's conserved values moved by (1 + μ) c (c random), against central differences.
    # Every closed form, projector cases and rank-deficient non-square z included. The
    # base point is moved off the balanced λ = 0, where K depends on |λ| (a padded zero
    # singular value gives √(λ²/4)) and d/dλ does not exist.
    model, target = _problem(getkey(), name)
    K = manifolds.intrinsic_metric(model)
    z0 = model.lift()
    v = jax.random.normal(getkey(), z0.shape) * 1e-2 * jnp.max(jnp.abs(z0))
    leaves = jax.tree.leaves(eqx.filter(K, eqx.is_inexact_array))
    c = [0.1 * jax.random.normal(getkey(), leaf.shape) for leaf in leaves]
    if name not in _LAM_SMOOTH:
        c = [jnp.zeros_like(ci) for ci in c]
    if isinstance(K, manifolds.DeepLinearMetric | manifolds.DiagonalChainMetric):
        c = [ci.at[0].set(0.0) for ci in c]  # Λ_0 = 0 by definition
    options = dict(args=target, stepsize_controller=_tight())

    def final_loss(s, mu):
        metric = _shifted_metric(K, c, 1.0 + mu)
        return flows.intrinsic_flow(metric, _loss, 0.0, 1.0, z0 + s * v, **options).losses[-1]

    h = 1e-4
    grad = jax.grad(final_loss, argnums=(0, 1))(0.0, 0.0)
    fd_s = (final_loss(h, 0.0) - final_loss(-h, 0.0)) / (2 * h)
    print(
        f"intrinsic {name}: d/ds |grad - FD| / |FD| = {float(abs(grad[0] - fd_s) / abs(fd_s)):.1e}"
    )
    assert abs(grad[0] - fd_s) <= 1e-6 * abs(fd_s), (grad[0], fd_s)
    if name in _LAM_SMOOTH:
        fd_mu = (final_loss(0.0, h) - final_loss(0.0, -h)) / (2 * h)
        print(
            f"intrinsic {name}: d/dmu |grad - FD| / |FD| = {float(abs(grad[1] - fd_mu) / abs(fd_mu)):.1e}"
        )
        assert abs(grad[1] - fd_mu) <= 1e-6 * abs(fd_mu), (grad[1], fd_mu)


@pytest.mark.parametrize("name", ["diagonal-depth3", "two-layer-3-2-5-pos", "deep-square-L3"])
def test_jacfwd_of_intrinsic_flow_equals_grad(name, getkey):
    # Forward mode (diffrax.ForwardMode) through K(z): the chain root's implicit derivative
    # and the Daleckii–Krein rule of the spectral metrics.
    model, target = _problem(getkey(), name)
    K = manifolds.intrinsic_metric(model)
    z0 = model.lift()
    v = jax.random.normal(getkey(), z0.shape) * 1e-2 * jnp.max(jnp.abs(z0))

    def final_loss(s, adjoint):
        return flows.intrinsic_flow(
            K,
            _loss,
            0.0,
            1.0,
            z0 + s * v,
            args=target,
            stepsize_controller=_tight(),
            adjoint=adjoint,
        ).losses[-1]

    forward = jax.jacfwd(lambda s: final_loss(s, dfx.ForwardMode()))(0.0)
    reverse = jax.grad(lambda s: final_loss(s, dfx.RecursiveCheckpointAdjoint()))(0.0)
    assert abs(forward - reverse) <= 1e-9 * abs(reverse), (forward, reverse)


def test_grad_with_respect_to_data_and_jacfwd_with_forward_mode(getkey):
    model, target = _problem(getkey())
    K = manifolds.intrinsic_metric(model)

    def final_z(y, adjoint):
        sol = flows.intrinsic_flow(
            K, _loss, 0.0, 1.0, model.lift(), args=y, stepsize_controller=_tight(), adjoint=adjoint
        )
        return sol.zs[-1]

    reverse = jax.jacrev(lambda y: final_z(y, dfx.RecursiveCheckpointAdjoint()))(target)
    forward = jax.jacfwd(lambda y: final_z(y, dfx.ForwardMode()))(target)
    np.testing.assert_allclose(forward, reverse, rtol=1e-9, atol=1e-9 * np.abs(reverse).max())
    direction = jax.random.normal(getkey(), target.shape)
    h = 1e-5
    fd = (
        final_z(target + h * direction, dfx.ForwardMode())
        - final_z(target - h * direction, dfx.ForwardMode())
    ) / (2 * h)
    jvp = jnp.tensordot(forward, direction, axes=2)
    assert float(jnp.linalg.norm(jvp - fd)) <= 1e-6 * float(jnp.linalg.norm(fd))


def test_constant_step_euler_converges_at_first_order(getkey):
    # A non-adaptive solver with ConstantStepSize works, and is the Euler method: its
    # error against a tight adaptive solve halves with the step.
    model, target = _problem(getkey())
    ref = flows.euclidean_flow(model, _loss, 0.0, 1.0, args=target, stepsize_controller=_tight())
    errors = []
    for dt in (1e-2, 5e-3, 2.5e-3):
        sol = flows.euclidean_flow(
            model,
            _loss,
            0.0,
            1.0,
            args=target,
            solver=dfx.Euler(),
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=dt,
        )
        errors.append(float(jnp.linalg.norm(sol.zs[-1] - ref.zs[-1])))
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    assert np.all((orders > 0.9) & (orders < 1.1)), orders


def test_final_state_continues_the_flow(getkey):
    # `final` is the state at t1: restarting from it reaches the same point as one
    # longer solve (to the solver's tolerance).
    model, target = _problem(getkey())
    options = dict(args=target, stepsize_controller=_tight())
    half = flows.euclidean_flow(model, _loss, 0.0, 0.5, **options)
    rest = flows.euclidean_flow(half.final, _loss, 0.5, 1.0, **options)
    whole = flows.euclidean_flow(model, _loss, 0.0, 1.0, **options)
    scale = float(jnp.max(jnp.abs(whole.zs[-1])))
    np.testing.assert_allclose(rest.zs[-1], whole.zs[-1], atol=1e-9 * scale)
    K = manifolds.intrinsic_metric(model)
    half = flows.intrinsic_flow(K, _loss, 0.0, 0.5, model.lift(), **options)
    rest = flows.intrinsic_flow(K, _loss, 0.5, 1.0, half.final, **options)
    np.testing.assert_allclose(rest.zs[-1], whole.zs[-1], atol=1e-9 * scale)


def test_traced_value_checks_raise_under_jit(getkey):
    model, target = _problem(getkey())
    run = eqx.filter_jit(
        lambda t1, ts: (
            flows.euclidean_flow(model, _loss, 0.0, t1, args=target, saveat=flows.SaveAt(ts=ts)).zs
        )
    )
    with pytest.raises(eqx.EquinoxRuntimeError, match="`t1` must be greater than `t0`"):
        run(jnp.asarray(-1.0), jnp.array([-0.5]))
    # A Python float is static under `filter_jit`: known while tracing, so checked then,
    # with the numbers in the message.
    with pytest.raises(ValueError, match="`t1` must be greater than `t0` = 0.0, got -1.0"):
        run(-1.0, jnp.array([-0.5]))
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-decreasing"):
        run(1.0, jnp.array([0.5, 0.2]))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"lie in \[t0, t1\]"):
        run(1.0, jnp.array([0.5, 2.0]))


def test_jit_over_the_metric_with_a_concrete_z0(getkey):
    # z0 closed over (concrete) inside an outer jit whose argument is λ: the host-side
    # finiteness check of z0 must not turn it into a tracer and fail.
    model, target = _problem(getkey(), "two-layer-3-2-5-pos")
    z0 = model.lift()

    def final_loss(lam):
        K = manifolds.TwoLayerLinearMetric(lam, 2)
        return flows.intrinsic_flow(K, _loss, 0.0, 1.0, z0, args=target).losses[-1]

    lam = manifolds.intrinsic_metric(model).lam
    assert abs(jax.jit(final_loss)(lam) - final_loss(lam)) <= 1e-12 * abs(final_loss(lam))
