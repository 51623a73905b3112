"""The scalar uv model: its intrinsic metric, its mirror potential, and the implicit bias."""

# --8<-- [start:setup]
import os
import pathlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optimistix as optx

import flows
import manifolds
import models

jax.config.update("jax_enable_x64", True)
out = pathlib.Path(os.environ.get("TUTORIAL_OUT", "tutorial-out"))
out.mkdir(parents=True, exist_ok=True)
# --8<-- [end:setup]

# --8<-- [start:metric]
model = models.DiagonalLinear([jnp.array(2.0), jnp.array(1.0)])  # (u, v) = (2, 1)
z = model.lift()  # u v = 2
delta = model.conservation_laws()  # v² − u² = −3 (h = u₂² − u₁²), shape (1,): one law
K = manifolds.intrinsic_metric(model)  # a manifolds.DiagonalChainMetric
M = manifolds.induced_metric(model)
print(f"z = {z}, δ = {delta[0]}, K(z) = {K(z).as_matrix()}, M(θ) = {M.as_matrix()}")
assert jnp.allclose(K(z).as_matrix(), jnp.sqrt(4 * z**2 + delta[0] ** 2)) and z == 2
assert jnp.allclose(K(z).as_matrix(), 5.0) and jnp.allclose(M.as_matrix(), 5.0)
# --8<-- [end:metric]

# --8<-- [start:mirror]
d, num_samples = 12, 8
kx, kinit = jax.random.split(jax.random.key(0))
X = jax.random.normal(kx, (num_samples, d))
truth = jnp.zeros(d).at[jnp.array([2, 7])].set(jnp.array([1.5, -1.0]))  # 2-sparse
y = X @ truth


def f(z, data):  # the data come in through the flows' `args`
    X, y = data
    return 0.5 * jnp.mean((X @ z - y) ** 2)


def init(delta):  # z₀ = 0 and |u² − v²| = δ in every coordinate
    return models.DiagonalLinear([jnp.sqrt(delta) * jnp.ones(d), jnp.zeros(d)])


test = manifolds.mirror_flow_test(manifolds.intrinsic_metric(init(0.1)), truth + 0.1)
print(f"K⁻¹ is a Hessian: {test.holds} (asymmetry {test.residual:.1e})")
assert test.holds
# --8<-- [end:mirror]


# --8<-- [start:bias]
def mirror_interpolator(delta):
    # argmin Σ ψ_δ(z_i) s.t. Xz = y. ψ_δ' = ½ arcsinh(2z/δ), so z = (δ/2) sinh(2Xᵀμ) at the
    # optimum, where μ minimizes the convex dual below.
    solver = optx.BFGS(rtol=1e-12, atol=1e-12)
    mu = optx.minimise(dual, solver, jnp.zeros(num_samples), delta, max_steps=10_000).value
    return delta / 2 * jnp.sinh(2 * X.T @ mu)


def dual(mu, delta):
    return jnp.sum(delta / 4 * jnp.cosh(2 * X.T @ mu)) - y @ mu


limits = {}
for delta, t1 in ((1e-3, 2e4), (1e-1, 1e3), (10.0, 50.0)):
    model = init(delta)
    K = manifolds.intrinsic_metric(model)
    options = dict(args=(X, y), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-12))
    on_theta = flows.euclidean_flow(model, f, 0.0, t1, **options)  # saves at t0 and t1
    on_z = flows.intrinsic_flow(K, f, 0.0, t1, model.lift(), **options)
    limit, target = on_theta.zs[-1], mirror_interpolator(delta)
    error = jnp.linalg.norm(limit - target) / jnp.linalg.norm(target)
    print(
        f"δ = {delta:g}: loss {on_theta.losses[-1]:.1e}, |φ(θ) − z| "
        f"{flows.relative_deviation(on_theta, on_z)[-1]:.1e}, |z(∞) − argmin ψ_δ| {error:.1e}"
    )
    assert error < 1e-6
    limits[delta] = limit
min_norm = jnp.linalg.pinv(X) @ y
assert jnp.linalg.norm(limits[10.0] - min_norm) < 1e-2 * jnp.linalg.norm(min_norm)
assert jnp.linalg.norm(limits[1e-3] - truth) < 0.1 * jnp.linalg.norm(truth)
# --8<-- [end:bias]

# --8<-- [start:figure]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
s = np.linspace(-2, 2, 401)
for delta in limits:
    psi = 0.5 * (s * np.arcsinh(2 * s / delta) - 0.5 * np.sqrt(4 * s**2 + delta**2))
    psi = psi - psi[200]  # ψ_δ(0) = 0
    ax1.plot(s, psi / psi[-1], label=f"δ = {delta:g}")
ax1.set(xlabel="z", ylabel="ψ_δ(z) / ψ_δ(2)", title="Mirror potential: ℓ1-like to ℓ2-like")
ax1.legend()
idx = np.arange(d)
ax2.stem(idx, np.asarray(truth), linefmt="k-", markerfmt="ko", basefmt=" ", label="truth")
for k, (delta, limit) in enumerate(limits.items()):
    ax2.plot(idx + 0.15 * (k + 1), limit, "o", label=f"gradient flow, δ = {delta:g}")
ax2.plot(idx, min_norm, "x", color="gray", label="min ℓ2-norm interpolator")
ax2.set(xlabel="coordinate i", ylabel="z_i(∞)", title="Which interpolator training finds")
ax2.legend(fontsize=8)
fig.savefig(out / "uv_implicit_bias.png", dpi=100)
plt.close(fig)
# --8<-- [end:figure]
