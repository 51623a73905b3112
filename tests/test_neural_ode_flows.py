"""Flows of linear neural ODEs: the Galerkin Euclidean flow against the intrinsic flow."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import flows
import manifolds
import models
from intrinsic._examples import _regression

from .helpers import count_compilations

T1 = 2.0
TS = jnp.linspace(0.0, T1, 5)
OPTIONS = dict(
    saveat=flows.SaveAt(ts=TS), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)
)
# One loss object for the whole module, so that compiled flows are shared by the tests.
LOSS = _regression(jax.random.key(4), 2, 2, 1)


def _balance(H):
    """max_s ‖H(s) − tr H(s)/n I‖ and λ̂(s) = tr H(s)/n, at each saved time."""
    n = H.shape[-1]
    lam = jnp.trace(H, axis1=-2, axis2=-1) / n
    residual = jnp.linalg.norm(H - lam[..., None, None] * jnp.eye(n)[None, None], axis=(-2, -1))
    return np.asarray(jnp.max(residual, axis=-1)), np.asarray(lam)


def test_flows_agree_and_laws_hold_as_the_basis_grows():
    # One regression problem, relaxed-balanced inits of growing degree p. The Euclidean
    # flow on the p + 1 Legendre coefficients is the Galerkin approximation of the L²
    # flow, whose z(t) is the intrinsic flow's and whose H(s) stays λ(s)I.
    key, loss = jax.random.key(3), LOSS
    K = manifolds.LogMeanMetric()
    rows = []
    for degree in (2, 4, 6):
        model = models.LinearNeuralODE.relaxed_balanced(key, 2, degree=degree, lam=0.5)
        euc = flows.euclidean_flow(model, loss, 0.0, T1, **OPTIONS)
        intr = flows.intrinsic_flow(K, loss, 0.0, T1, model.lift(), **OPTIONS)
        assert euc.successful and intr.successful
        assert euc.losses[-1] < 0.8 * euc.losses[0]
        deviation = float(jnp.max(flows.relative_deviation(euc, intr)))
        residual, lam = _balance(euc.conserved)
        rows.append(
            (degree + 1, deviation, residual[0], residual.max(), np.abs(lam - lam[:1]).max())
        )
    print("\nbasis size | max deviation | balance residual t=0 | max_t residual | max drift of λ̂")
    for row in rows:
        size, deviation, first, worst, drift = row
        print(f"{size:10d} | {deviation:13.2e} | {first:20.2e} | {worst:14.2e} | {drift:15.2e}")
    sizes, deviations = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    order = -np.polyfit(np.log(sizes), np.log(deviations), 1)[0]
    print(f"observed order (log-log fit of max deviation vs basis size): {order:.1f}")
    assert all(a > 100 * b for a, b in zip(deviations, deviations[1:]))
    assert deviations[-1] <= 1e-8 and order >= 4
    # H(s) = λ(s)I along the flow up to discretisation. The residual of H − λ̂I shrinks
    # with the basis. λ̂(s) = 2∂_s tr A(s)/n is conserved by the L² flow (tr of the
    # gradient is constant in s); in the Galerkin flow its drift is the depth solver's
    # error on the high Legendre modes, which grows with p at a fixed tolerance and
    # shrinks with the tolerance (measured: 1e-4 → 1e-6 at p = 8 from rtol 1.5e-10 to
    # 1e-12).
    residuals = [r[3] for r in rows]
    assert all(a > 5 * b for a, b in zip(residuals, residuals[1:]))
    assert rows[-1][3] <= 10 * rows[-1][2]
    assert max(r[4] for r in rows) <= 1e-4


def test_nested_solve_compiles_once():
    # The depth solve sits inside the flow's vector field: the whole flow is one
    # compiled program, reused for another init of the same shape.
    loss = LOSS
    first = models.LinearNeuralODE.relaxed_balanced(jax.random.key(5), 2, degree=6, lam=0.5)
    second = models.LinearNeuralODE.relaxed_balanced(jax.random.key(6), 2, degree=6, lam=-0.2)
    flows.euclidean_flow(first, loss, 0.0, T1, **OPTIONS)
    with count_compilations() as counter:
        sol = flows.euclidean_flow(second, loss, 0.0, T1, **OPTIONS)
        jax.block_until_ready(sol.zs)
    assert counter.count == 0
    assert int(sol.stats["num_steps"]) > 10
