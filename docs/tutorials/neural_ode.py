"""Linear neural ODEs: the depth solve and its adjoints, the log-mean metric, both flows."""

# --8<-- [start:setup]
import os
import pathlib

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flows
import manifolds
import models

jax.config.update("jax_enable_x64", True)
out = pathlib.Path(os.environ.get("TUTORIAL_OUT", "tutorial-out"))
out.mkdir(parents=True, exist_ok=True)
# --8<-- [end:setup]

# --8<-- [start:model]
key = jax.random.key(0)
for degree in (4, 6, 8, 10):
    ode = models.LinearNeuralODE.relaxed_balanced(key, 2, degree=degree, lam=0.5)
    print(f"degree {degree:2d}: max_s |H(s) - λ(s) I| = {float(ode.balance_residual()):.1e}")
z = ode.lift()  # R(1), R' = A(s) R, R(0) = I, by diffrax
# det R(1) = exp ∫ tr A(s) ds = exp(tr c₀): only e₀ = 1 has a nonzero mean.
assert jnp.allclose(jnp.linalg.det(z), jnp.exp(jnp.trace(ode.coeffs[0])), rtol=1e-9)
# --8<-- [end:model]

# --8<-- [start:adjoints]
G = jax.random.normal(jax.random.key(1), (2, 2))


def pairing(coeffs, adjoint):
    # <G, φ(A)>: a scalar through the depth solve, differentiated by `adjoint`.
    model = models.LinearNeuralODE(coeffs, adjoint=adjoint, rtol=1e-12, atol=1e-12)
    return jnp.sum(G * model.lift())


grads = {
    name: jax.grad(pairing)(ode.coeffs, adjoint)
    for name, adjoint in {
        "recursive checkpoint": dfx.RecursiveCheckpointAdjoint(),
        "direct": dfx.DirectAdjoint(),
        "backsolve": dfx.BacksolveAdjoint(),
    }.items()
}
# A central finite difference in one random direction, as the independent reference
# (its error: eps² from the formula, 1e-12/eps from the tolerance of the depth solve).
V = jax.random.normal(jax.random.key(2), ode.coeffs.shape)
eps = 1e-4
adjoint = dfx.RecursiveCheckpointAdjoint()
fd = (pairing(ode.coeffs + eps * V, adjoint) - pairing(ode.coeffs - eps * V, adjoint)) / (2 * eps)
for name, g in grads.items():
    error = abs(float(jnp.sum(g * V)) - float(fd)) / abs(float(fd))
    print(f"{name:21s}: <grad, V> = {float(jnp.sum(g * V)):.10f}, relative error {error:.0e}")
    # Backsolve integrates the adjoint ODE backwards: accurate to the tolerances only.
    assert error <= (1e-6 if name == "backsolve" else 1e-7)
# --8<-- [end:adjoints]

# --8<-- [start:metric]
K = manifolds.intrinsic_metric(ode)  # LogMeanMetric: the level set is H(s) = λ(s)I
forward = eqx.tree_at(lambda m: m.adjoint, ode, dfx.DirectAdjoint())  # jvp needs Direct
M = manifolds.induced_metric(forward)
X = jax.random.normal(jax.random.key(3), (2, 2))
gap = jnp.linalg.norm(K(z).mv(X) - M.mv(X)) / jnp.linalg.norm(M.mv(X))
print(f"|K(z)X - M(A)X| / |M(A)X| = {float(gap):.1e}")
assert gap <= 1e-8

# The residual network W_k = I + A(s_k)/L tends to the ODE's end-to-end map at first order.
for L in (8, 32, 128):
    deep = models.DeepLinear.from_neural_ode(ode, L)
    error = jnp.linalg.norm(deep.lift() - z) / jnp.linalg.norm(z)
    print(f"L = {L:3d}: |W_L ... W_1 - z| / |z| = {float(error):.1e}")
# --8<-- [end:metric]

# --8<-- [start:flows]
kx, kt = jax.random.split(jax.random.key(4))
Xdata = jax.random.normal(kx, (2, 20))
Y = jnp.outer(jax.random.normal(kt, (2,)), jnp.array([1.0, -0.5])) @ Xdata  # rank one


def loss(z, data):
    X, Y = data
    return 0.5 * jnp.mean(jnp.sum((z @ X - Y) ** 2, axis=0))


ts = jnp.linspace(0.0, 3.0, 31)
options = dict(
    args=(Xdata, Y),
    saveat=flows.SaveAt(ts=ts),
    stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
)
euclidean = flows.euclidean_flow(ode, loss, 0.0, 3.0, **options)
intrinsic = flows.intrinsic_flow(K, loss, 0.0, 3.0, z, **options)
deviation = flows.relative_deviation(euclidean, intrinsic)
print(
    f"{ode.coeffs.size} coefficients against {z.size} entries of z: "
    f"max deviation {float(deviation.max()):.1e}; loss {float(euclidean.losses[0]):.3f} -> "
    f"{float(euclidean.losses[-1]):.2e}"
)
assert euclidean.successful and intrinsic.successful and deviation.max() <= 1e-8
# --8<-- [end:flows]

# --8<-- [start:plot]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
left.semilogy(ts, euclidean.losses, lw=3, alpha=0.4, label="Euclidean flow on A (Galerkin)")
left.semilogy(ts, intrinsic.losses, "k--", label="intrinsic flow on z, log-mean K")
left.set(xlabel="t", ylabel="loss", title="Training loss")
left.legend()
right.semilogy(ts[1:], deviation[1:])
right.set(xlabel="t", title="|φ(A(t)) − z(t)| / max|z|")
fig.tight_layout()
fig.savefig(out / "neural_ode_flows.png", dpi=120)
# --8<-- [end:plot]

# --8<-- [start:ntk]
# Any Equinox model: its outputs on a fixed batch are a lifting whose metric is the NTK.
node = models.NeuralODE(2, 8, 1, key=jax.random.key(5), num_steps=8, adjoint=dfx.DirectAdjoint())
inputs = jax.random.normal(jax.random.key(6), (4, 2))
lifting = models.OutputLifting(node, inputs)
ntk = manifolds.induced_metric(lifting).as_matrix()  # (4·2) x (4·2) Gram matrix J Jᵀ
print(
    f"empirical NTK on 4 inputs: shape {ntk.shape}, eigenvalues ≥ {float(jnp.linalg.eigvalsh(ntk)[0]):.1e}"
)
assert np.allclose(ntk, ntk.T)
# --8<-- [end:ntk]
