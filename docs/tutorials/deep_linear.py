"""Deep linear networks: Arora et al.'s end-to-end formula, and what depth does to training."""

# --8<-- [start:setup]
import os
import pathlib

import diffrax as dfx
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

# --8<-- [start:arora]
model = models.DeepLinear.balanced(jax.random.key(0), (2, 4, 5, 2, 2))  # L = 4, any widths
L, Z = model.depth, model.lift()  # Z = W₄W₃W₂W₁ ∈ ℝ^{2×2}


def power(A, p):  # A^p for a symmetric PSD matrix
    w, Q = jnp.linalg.eigh(A)
    return (Q * (jnp.clip(w, 0.0) ** p)[None, :]) @ Q.T


def arora(X):
    return sum(
        power(Z @ Z.T, (L - j) / L) @ X @ power(Z.T @ Z, (j - 1) / L) for j in range(1, L + 1)
    )


X = jax.random.normal(jax.random.key(1), Z.shape)
M = manifolds.induced_metric(model)  # ∂φ∂φᵀ, from the weights
K = manifolds.intrinsic_metric(model)  # a manifolds.DeepLinearMetric, from Z alone
print(f"|M[X] − Arora(X)| = {jnp.abs(M.mv(X) - arora(X)).max():.1e}")
print(f"|K(Z)[X] − Arora(X)| = {jnp.abs(K(Z).mv(X) - arora(X)).max():.1e}")
assert jnp.allclose(M.mv(X), arora(X), rtol=1e-8) and jnp.allclose(K(Z).mv(X), arora(X))
# --8<-- [end:arora]

# --8<-- [start:relaxed]
relaxed = models.DeepLinear.relaxed_balanced(jax.random.key(2), (3, 3, 3, 3), (0.5, -0.3))
print([np.round(np.linalg.eigvalsh(h), 6) for h in relaxed.conservation_laws()])
K = manifolds.intrinsic_metric(relaxed)
Mmat = manifolds.induced_metric(relaxed).as_matrix()
assert jnp.allclose(K(relaxed.lift()).as_matrix(), Mmat, rtol=1e-10, atol=1e-12)
# --8<-- [end:relaxed]

# --8<-- [start:depth]
target = jnp.diag(jnp.array([3.0, 1.0, 0.3]))  # learnt one direction after the other


def f(z, target):
    return 0.5 * jnp.sum((z - target) ** 2)


ts = jnp.linspace(0.0, 15.0, 151)
# Tight tolerances: small singular values of Z make K's derivatives large.
options = dict(
    args=target,
    saveat=flows.SaveAt(ts=ts),
    stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-12),
)
losses = {}
for depth in (2, 3, 4):
    model = models.DeepLinear.balanced(jax.random.key(3), (3,) * (depth + 1), scale=0.3)
    K = manifolds.intrinsic_metric(model)
    on_theta = flows.euclidean_flow(model, f, ts[0], ts[-1], **options)
    on_z = flows.intrinsic_flow(K, f, ts[0], ts[-1], model.lift(), **options)
    deviation = flows.relative_deviation(on_theta, on_z).max()
    print(f"L = {depth}: final loss {on_theta.losses[-1]:.1e}, max |φ(θ) − z| {deviation:.1e}")
    assert deviation < 1e-8
    losses[depth] = (on_theta.losses, on_z.losses)
# --8<-- [end:depth]

# --8<-- [start:figure]
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for depth, (euclidean, intrinsic) in losses.items():
    (line,) = ax.semilogy(ts, euclidean, label=f"L = {depth}, Euclidean flow on θ")
    ax.semilogy(ts[::6], intrinsic[::6], "o", color=line.get_color(), fillstyle="none")
ax.plot([], [], "ko", fillstyle="none", label="intrinsic flow on Z (Arora)")
ax.set(xlabel="t", ylabel="loss", title="Balanced deep linear nets, small init")
ax.legend(fontsize=8)
fig.savefig(out / "deep_linear_depth.png", dpi=100)
plt.close(fig)
# --8<-- [end:figure]
