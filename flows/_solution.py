"""The solution of a flow: saved times, lifted states, losses, conserved quantities."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree


class FlowSolution(eqx.Module):
    r"""What [`flows.euclidean_flow`][] and [`flows.intrinsic_flow`][] return.

    **Fields:**

    - `ts`: the saved times, shape `(T,)`.
    - `zs`: $z(t) = \varphi(\theta(t))$ (or the intrinsic state) at `ts`, leading axis `T`.
    - `losses`: $f(z(t))$ at `ts`.
    - `conserved`: $h(\theta(t))$ at `ts` for the Euclidean flow, `None` for the intrinsic flow.
    - `params`: the model at `ts` (leaves with a leading time axis) when `save_params=True`.
    - `result`: a `diffrax.RESULTS` item; anything but `successful` means the trajectory
      stopped early and the saves after that point are `inf`.
    - `stats`: diffrax's statistics (`num_steps`, `num_accepted_steps`, ...).
    """

    ts: Float[Array, " T"]
    zs: PyTree[Array]
    losses: Float[Array, " T"]
    conserved: PyTree[Array] | None
    params: PyTree[Array] | None
    result: dfx.RESULTS
    stats: dict

    @property
    def successful(self) -> bool:
        """Whether the solver reached `t1`."""
        return bool(self.result == dfx.RESULTS.successful)

    @property
    def message(self) -> str:
        """The solver's message: `''` on success, otherwise what went wrong and what to try."""
        return "" if self.successful else dfx.RESULTS[self.result]

    @property
    def conservation_drift(self) -> Float[Array, ""]:
        r"""$\max_t \max_i |h_i(\theta(t)) - h_i(\theta(t_0))|$ over the saved times."""
        if self.conserved is None:
            raise ValueError("This solution has no conserved quantities (intrinsic flow).")
        drifts = jax.tree.leaves(
            jax.tree.map(lambda h: jnp.max(jnp.abs(h - h[:1])), self.conserved)
        )
        return jnp.max(jnp.stack(drifts)) if drifts else jnp.asarray(0.0)


def relative_deviation(a: FlowSolution, b: FlowSolution) -> Float[Array, " T"]:
    r"""$\|z_a(t) - z_b(t)\| / \max_s \|z_a(s)\|$ at each saved time (Frobenius norms).

    The two solutions must have been saved at the same times.
    """
    if a.ts.shape != b.ts.shape:
        raise ValueError(
            f"The solutions were saved at different times: {a.ts.shape} vs {b.ts.shape}."
        )

    def sqnorm(tree):
        leaves = jax.tree.leaves(tree)
        return sum(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1) for x in leaves)

    diff = jax.tree.map(lambda x, y: x - y, a.zs, b.zs)
    return jnp.sqrt(sqnorm(diff)) / jnp.max(jnp.sqrt(sqnorm(a.zs)))
