"""Extending: what a new factorization gets for free (here `attention_head.AttentionHead`)."""

# --8<-- [start:setup]
import os
import pathlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
from attention_head import AttentionHead  # the file next to this one

import flows
import manifolds

jax.config.update("jax_enable_x64", True)
out = pathlib.Path(os.environ.get("TUTORIAL_OUT", "tutorial-out"))
out.mkdir(parents=True, exist_ok=True)
d, h = 3, 2  # token dimension, head dimension
# --8<-- [end:setup]

# --8<-- [start:laws]
head = AttentionHead.random(jax.random.key(0), d, h)
trace = manifolds.lie_algebra_trace(head)
print(
    f"D = {trace.num_parameters}, rank ∂φ = {trace.span_rank}, dim Lie(W) per level "
    f"{trace.dimensions_per_level}: {trace.num_conservation_laws} laws, "
    f"Frobenius: {trace.frobenius}"
)
laws = manifolds.polynomial_conservation_laws(head, degree=2)
for law in laws.laws:
    print("   ", law)
assert trace.num_conservation_laws == len(laws.laws) == h * (h + 1)  # both matrices' entries
# --8<-- [end:laws]

# --8<-- [start:verdicts]
balanced = AttentionHead.relaxed_balanced(jax.random.key(1), d, h, 0.5, -0.2)
for name, model in (("generic", head), ("relaxed balanced", balanced)):
    test = manifolds.kernel_inclusion_test(model)
    print(f"{name}: kernel inclusion {test.holds} (residual {test.residual:.1e})")
    assert test.holds == (name == "relaxed balanced")
# --8<-- [end:verdicts]

# --8<-- [start:flows]
kx, kteacher = jax.random.split(jax.random.key(2))
tokens = jax.random.normal(kx, (8, 5, d))  # 8 sequences of 5 tokens
teacher = AttentionHead.random(kteacher, d, h).lift()


def attend(z, x):  # the head's output at every position of one sequence
    qk, ov = z
    return jax.nn.softmax(x @ qk @ x.T, axis=-1) @ x @ ov.T


def f(z, data):  # the data are the flows' `args`
    tokens, targets = data
    outputs = jax.vmap(attend, in_axes=(None, 0))(z, tokens)
    return 0.5 * jnp.mean((outputs - targets) ** 2)


data = (tokens, jax.vmap(attend, in_axes=(None, 0))(teacher, tokens))
ts = jnp.linspace(0.0, 20.0, 41)
options = dict(
    args=data,
    saveat=flows.SaveAt(ts=ts),
    stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
)
K = manifolds.intrinsic_metric(balanced)  # our registered closed form
on_theta = flows.euclidean_flow(balanced, f, ts[0], ts[-1], **options)
on_z = flows.intrinsic_flow(K, f, ts[0], ts[-1], balanced.lift(), **options)
deviation = flows.relative_deviation(on_theta, on_z)
print(f"max |φ(θ(t)) − z(t)| / max|z| = {deviation.max():.1e}, laws drift by ", end="")
print(f"{on_theta.conservation_drift:.1e}")
assert deviation.max() < 1e-8 and on_theta.conservation_drift < 1e-8
# --8<-- [end:flows]

# --8<-- [start:recovered]
generic_K = manifolds.RecoveredMetric(balanced)  # no closed form needed
z1 = on_z.final  # z(t1)
g = jax.tree.map(jnp.ones_like, z1)
difference = [
    jnp.abs(a - b).max()
    # generic_K solves φ(θ) = z1, h(θ) = h(θ₀) from θ₀, then takes M(θ)
    for a, b in zip(generic_K(z1).mv(g), K(z1).mv(g))
]
print(f"RecoveredMetric vs closed form at z(t1): {max(difference):.1e}")
assert max(difference) < 1e-6
# --8<-- [end:recovered]

# --8<-- [start:figure]
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
ax.semilogy(ts, on_theta.losses, label="Euclidean flow on θ (24 weights)")
ax.semilogy(ts[::2], on_z.losses[::2], "o", fillstyle="none", label="intrinsic flow on z (18)")
ax.set(xlabel="t", ylabel="loss", title="One attention head, relaxed balanced")
ax.legend()
fig.savefig(out / "attention_head.png", dpi=100)
plt.close(fig)
# --8<-- [end:figure]
