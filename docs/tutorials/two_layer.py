"""Two-layer linear networks: which initializations give an intrinsic flow."""

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

# --8<-- [start:inits]
n, r, m = 3, 3, 3  # Z = U Vᵀ with U, V ∈ ℝ^{3×3}: r ≤ max(n, m)
k1, k2, k3, kdata = jax.random.split(jax.random.key(0), 4)
inits = {
    "balanced": models.TwoLayerLinear.balanced(k1, n, r, m),
    "relaxed balanced": models.TwoLayerLinear.relaxed_balanced(k2, n, r, m, 0.5),
    "generic": models.TwoLayerLinear.random(k3, n, r, m),
}
residuals = {}
for name, model in inits.items():
    S = model.conservation_laws()  # UᵀU − VᵀV, conserved by every gradient flow
    test = manifolds.kernel_inclusion_test(model)
    residuals[name] = test.residual
    print(
        f"{name:>16}: eig S = {np.round(np.linalg.eigvalsh(S), 3)}, kernel inclusion "
        f"{test.holds} (residual {test.residual:.1e}, dim ker ∂φ ∩ ker ∂h = {test.kernel_dimension})"
    )
assert residuals["balanced"] < 1e-10 and residuals["relaxed balanced"] < 1e-10
assert residuals["generic"] > 1e-2
# --8<-- [end:inits]

# --8<-- [start:fiber]
fiber = manifolds.fiber_consistency(inits["generic"], key=jax.random.key(1))
print(f"generic: M varies by {fiber.residual:.1e} (relative) over the fiber of z₀ in the level set")
assert not fiber.holds
# --8<-- [end:fiber]

# --8<-- [start:flows]
target = jax.random.normal(kdata, (n, 1)) @ jax.random.normal(kdata, (1, m))  # rank 1


def f(z, target):  # the target is the flows' `args`: a new one recompiles nothing
    return 0.5 * jnp.sum((z - target) ** 2)


ts = jnp.linspace(0.0, 4.0, 41)
options = dict(
    args=target,
    saveat=flows.SaveAt(ts=ts),
    stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
)
deviations = {}
for name, model in inits.items():
    # The closed form for S = λI, with λ = tr S / r: exact for the first two, a guess for the
    # generic init (manifolds.intrinsic_metric refuses it with a ValueError).
    lam = jnp.trace(model.conservation_laws()) / r
    K = manifolds.TwoLayerLinearMetric(lam, r)
    on_theta = flows.euclidean_flow(model, f, ts[0], ts[-1], **options)
    on_z = flows.intrinsic_flow(K, f, ts[0], ts[-1], model.lift(), **options)
    deviations[name] = flows.relative_deviation(on_theta, on_z)
    print(f"{name:>16}: max_t |φ(θ(t)) − z(t)| / max|z| = {deviations[name].max():.1e}")
assert deviations["balanced"].max() < 1e-8 and deviations["relaxed balanced"].max() < 1e-8
assert deviations["generic"].max() > 1e-3
# --8<-- [end:flows]

# --8<-- [start:open]
wide = models.TwoLayerLinear.random(jax.random.key(2), 1, 2, 1)  # n = m = 1 < r = 2
S = wide.conservation_laws()
print(f"n = m = 1, r = 2, eig S = {np.round(np.linalg.eigvalsh(S), 3)}: ", end="")
print(f"kernel inclusion {manifolds.kernel_inclusion_test(wide).holds}")
z = wide.lift()[0, 0]
K = jnp.sqrt(4 * z**2 + 2 * jnp.sum(S**2) - jnp.trace(S) ** 2)  # for every S
assert jnp.allclose(manifolds.induced_metric(wide).as_matrix(), K)
# --8<-- [end:open]

# --8<-- [start:figure]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax1.bar(list(residuals), list(residuals.values()), color=["C0", "C1", "C3"])
ax1.axhline(1.5e-8, color="k", ls="--", label="tolerance √ε")
ax1.set(yscale="log", ylabel="residual", title="Kernel-inclusion test (r ≤ max(n, m))")
ax1.legend()
floor = np.finfo(float).tiny
for (name, dev), color in zip(deviations.items(), ["C0", "C1", "C3"]):
    ax2.semilogy(ts[1:], np.maximum(dev[1:], floor), color=color, label=name)
ax2.set(xlabel="t", ylabel="|φ(θ(t)) − z(t)| / max|z|", title="Euclidean vs intrinsic flow")
ax2.legend()
fig.savefig(out / "two_layer_inits.png", dpi=100)
plt.close(fig)
# --8<-- [end:figure]
