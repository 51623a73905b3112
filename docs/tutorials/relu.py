"""ReLU networks: the path-lifting, its laws, and both flows across activation changes."""

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

# --8<-- [start:lift]
net = models.ReLUNetwork.random(jax.random.key(0), (2, 3, 2))  # D = 12 weights, 3 hidden
(z,) = net.lift()  # z[k, j, i] = W₂[k, j] W₁[j, i]: one entry per path input → j → output
x = jnp.array([0.7, -1.2])
same = jnp.allclose(net(x), net.predict_from_lift(net.lift(), net.activation_pattern(x), x))
print(f"{net.num_paths} paths, g(x) from z and the pattern: {bool(same)}")

trace = manifolds.lie_algebra_trace(net)
print(
    f"rank ∂Φ = {trace.span_rank} = D − #hidden, dim Lie(W) = {trace.dimension}, "
    f"{trace.num_conservation_laws} laws (one per hidden neuron), Frobenius: {trace.frobenius}"
)
assert trace.span_rank == 12 - 3 and trace.num_conservation_laws == 3 and trace.frobenius
# --8<-- [end:lift]

# --8<-- [start:metric]
K = manifolds.intrinsic_metric(net)  # two layers: the per-neuron closed form
M = manifolds.induced_metric(net)
V = (jax.random.normal(jax.random.key(1), z.shape),)
gap = jnp.abs(K(net.lift()).mv(V)[0] - M.mv(V)[0]).max()
print(f"|K(z)[V] − M(θ)[V]| = {gap:.1e}")
assert gap < 1e-12
# --8<-- [end:metric]

# --8<-- [start:flows]
kstudent, kteacher, kx = jax.random.split(jax.random.key(2), 3)  # as `intrinsic run relu`
student = models.ReLUNetwork.random(kstudent, (2, 5, 1))
teacher = models.ReLUNetwork.random(kteacher, (2, 5, 1))
X = jax.random.normal(kx, (12, 2))
loss = flows.OutputLoss(X, jax.vmap(teacher)(X))  # ½ mean squared error on the outputs

ts = jnp.linspace(0.0, 6.0, 61)
opts = dict(
    saveat=flows.SaveAt(ts=ts), stepsize_controller=dfx.PIDController(rtol=1e-11, atol=1e-11)
)
euclidean = flows.euclidean_flow(student, loss, 0.0, 6.0, **opts)
intrinsic = flows.intrinsic_flow(
    manifolds.intrinsic_metric(student), loss, 0.0, 6.0, student.lift(), **opts
)
deviation = flows.relative_deviation(euclidean, intrinsic)
print("pattern changes at t =", np.round(np.asarray(euclidean.event_times), 4))
print(f"max deviation {deviation.max():.1e}")
assert len(euclidean.event_times) >= 1 and deviation.max() < 1e-7
# --8<-- [end:flows]

# --8<-- [start:plot]
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
a.semilogy(ts, euclidean.losses, label="Euclidean flow on θ (15 weights)")
a.semilogy(ts, intrinsic.losses, "--", label="intrinsic flow on z (10 paths)")
for t in np.asarray(euclidean.event_times):
    a.axvline(t, color="gray", lw=0.5)
a.set(xlabel="t", ylabel="loss", title="Training (grey: activation changes)")
a.legend()
b.semilogy(ts[1:], np.maximum(np.asarray(deviation[1:]), 1e-16))
b.set(xlabel="t", title="‖φ(θ(t)) − z(t)‖ / max‖z‖")
fig.savefig(out / "relu_flows.png", dpi=100)
# --8<-- [end:plot]
