"""The flows under `jax.jit`, `jax.vmap` and `jax.grad`: times and data are traced values."""

# --8<-- [start:compose]
import diffrax as dfx
import jax
import jax.numpy as jnp

import flows
import models

jax.config.update("jax_enable_x64", True)

model = models.TwoLayerLinear.relaxed_balanced(jax.random.key(0), n=3, r=2, m=4, lam=0.5)


def f(z, target):
    return 0.5 * jnp.sum((z - target) ** 2)


@jax.jit
def final_loss(t1, target):  # t1 and the data are traced: new values recompile nothing
    sol = flows.euclidean_flow(model, f, 0.0, t1, args=target, saveat=flows.SaveAt(t1=True))
    return sol.losses[-1]


target = jax.random.normal(jax.random.key(1), (3, 4))
print(final_loss(1.0, target), final_loss(2.0, target))  # one compilation for both
targets = jax.random.normal(jax.random.key(2), (5, 3, 4))
print(jax.vmap(final_loss, in_axes=(None, 0))(2.0, targets))  # a batch of args: 5 flows
dloss = jax.grad(final_loss, argnums=1)(2.0, target)  # d loss(θ(t1)) / d target
# --8<-- [end:compose]

# The checks: d loss / d target against central differences along a random direction, and
# d loss / d t1 = −|∇ℓ(θ(t1))|² (the loss decreases at the rate of the squared gradient).
direction = jax.random.normal(jax.random.key(3), target.shape)
eps = 1e-4
central = (
    final_loss(2.0, target + eps * direction) - final_loss(2.0, target - eps * direction)
) / (2 * eps)
assert jnp.allclose(jnp.vdot(dloss, direction), central, rtol=1e-5), (dloss, central)
theta1 = flows.euclidean_flow(
    model,
    f,
    0.0,
    2.0,
    args=target,
    stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
).final
grad1 = jax.grad(lambda m: f(m.lift(), target))(theta1)
rate = -sum(jnp.sum(g**2) for g in jax.tree.leaves(grad1))
assert jnp.allclose(jax.grad(final_loss)(2.0, target), rate, rtol=1e-5)
print(f"d loss / d t1 = {float(rate):.4f} = −|∇ℓ(θ(t1))|²")
