"""The solution of a flow: saved times, lifted states, losses, conserved quantities."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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
    - `stats`: diffrax's statistics (`num_steps`, `num_accepted_steps`, ...), summed
      over the smooth pieces of a piecewise flow.
    - `event_times`: for a piecewise-smooth flow (a ReLU network on data), the times at
      which the activation pattern changed, in order; `None` for a smooth flow.
    """

    ts: Float[Array, " T"]
    zs: PyTree[Array]
    losses: Float[Array, " T"]
    conserved: PyTree[Array] | None
    params: PyTree[Array] | None
    result: dfx.RESULTS
    stats: dict
    event_times: Float[Array, " E"] | None = None

    @property
    def successful(self) -> bool:
        """Whether the solver reached `t1` (for an ensemble: every member did)."""
        return bool(np.all(self.succeeded))

    @property
    def succeeded(self) -> np.ndarray:
        """Whether the solver reached `t1`, per member for an ensemble (a bool array)."""
        return np.asarray(self.result == dfx.RESULTS.successful)

    @property
    def message(self) -> str:
        """The solver's message: `''` on success, otherwise what went wrong and what to try.

        For an ensemble, the messages of the failed members, with their indices."""
        if self.successful:
            return ""
        if np.ndim(self.succeeded) == 0:
            return dfx.RESULTS[self.result]
        failed = np.flatnonzero(~self.succeeded)
        return "; ".join(
            f"member {i}: {dfx.RESULTS[jax.tree.map(lambda r, i=i: r[i], self.result)]}"
            for i in failed
        )

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
