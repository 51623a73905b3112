"""What a flow saves (`SaveAt`), what it returns (`FlowSolution`) and how it can fail."""

from collections.abc import Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree, Real


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Diffrax's result codes, plus those of the flows' own restarts.

    `flows.RESULTS[solution.result]` is the message; `solution.succeeded` the jit-safe
    check.
    """

    max_events_reached = (
        "The activation pattern (or a weight's sign) changed more than `max_events` "
        "times before `t1`. Raise `max_events`, or shorten the time span; a flow that "
        "chatters between two patterns sits on a switching surface (a sliding mode)."
    )
    nonfinite_initial_state = (
        "The initial state, its loss or its gradient has non-finite (inf or nan) "
        "entries: check the initialization and the loss `f(z, args)` at it."
    )


class SaveAt(eqx.Module):
    r"""When a flow saves its summaries: $z = \varphi(\theta)$, the loss, the laws.

    The saved times are, in this order, $t_0$ (if `t0`), the entries of `ts`, and $t_1$
    (if `t1`). Only summaries are stored (through diffrax's `SubSaveAt(fn=...)`), never
    the whole trajectory of $\theta$ unless `params=True`; the state at $t_1$ is always
    in the solution (`solution.final`).

    **Arguments:**

    - `t0`: save at the initial time.
    - `t1`: save at the final time.
    - `ts`: times in $[t_0, t_1]$, non-decreasing. An array, so other times of the same
      number recompile nothing.
    - `params`: also save the model (Euclidean flow) at the saved times, in
      `solution.params`.

    Default: `SaveAt(t0=True, t1=True)`.
    """

    t0: bool = eqx.field(static=True, default=False)
    t1: bool = eqx.field(static=True, default=False)
    ts: Real[Array, " T"] | None = None
    params: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        *,
        t0: bool = False,
        t1: bool = False,
        ts: Real[ArrayLike, " T"] | Sequence[float] | None = None,
        params: bool = False,
    ):
        for name, value in (("t0", t0), ("t1", t1), ("params", params)):
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"`SaveAt({name}=...)` must be a bool, got {value!r}.")
        self.t0, self.t1, self.params = bool(t0), bool(t1), bool(params)
        if ts is not None:
            if isinstance(ts, str) or not _is_numeric(ts):
                raise TypeError(f"`SaveAt(ts=...)` must be a 1-D array of times, got {ts!r}.")
            ts = jnp.asarray(ts)
            if ts.ndim != 1 or ts.shape[0] < 1:
                raise ValueError(
                    f"`SaveAt(ts=...)` must be a non-empty 1-D array of times, got shape "
                    f"{ts.shape}."
                )
            if not jnp.issubdtype(ts.dtype, jnp.floating):
                ts = ts.astype(jnp.result_type(float))
        if not (t0 or t1) and ts is None:
            raise ValueError("`SaveAt` saves nothing: set `t0`, `t1` or `ts`.")
        self.ts = ts

    def times(self, t0: Array, t1: Array) -> Float[Array, " T"]:
        """The saved times, $t_0$ and $t_1$ included where asked for."""
        parts = [t0[None]] if self.t0 else []
        if self.ts is not None:
            parts.append(self.ts.astype(t0.dtype))
        if self.t1:
            parts.append(t1[None])
        return jnp.concatenate(parts)


def _is_numeric(x) -> bool:
    try:
        return jnp.issubdtype(jnp.asarray(x).dtype, jnp.number)
    except TypeError:
        return False


class FlowSolution(eqx.Module):
    r"""What [`flows.euclidean_flow`][] and [`flows.intrinsic_flow`][] return.

    **Fields:**

    - `t0`, `t1`: the time span.
    - `ts`: the saved times, shape `(T,)` (see [`flows.SaveAt`][]).
    - `zs`: $z(t) = \varphi(\theta(t))$ (or the intrinsic state) at `ts`, leading axis `T`.
    - `losses`: $f(z(t), \text{args})$ at `ts`.
    - `conserved`: $h(\theta(t))$ at `ts` for the Euclidean flow, `None` for the intrinsic flow.
    - `params`: the model at `ts` (leaves with a leading time axis) with
      `SaveAt(params=True)`, else `None`.
    - `final`: the state at $t_1$: the model $\theta(t_1)$ for the Euclidean flow, $z(t_1)$
      for the intrinsic flow (where the solve stopped, if it failed).
    - `result`: a [`flows.RESULTS`][] item; anything but `successful` means the
      trajectory stopped early and the saves after that point are `inf`.
    - `stats`: diffrax's statistics (`num_steps`, `num_accepted_steps`, ...), summed
      over the smooth pieces of a piecewise flow.
    - `event_times`: for a piecewise-smooth flow (a ReLU network on data), the times at
      which the activation pattern changed, in order; `None` for a smooth flow.
    """

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    ts: Float[Array, " T"]
    zs: PyTree[Array]
    losses: Float[Array, " T"]
    conserved: PyTree[Array] | None
    params: PyTree[Array] | None
    final: PyTree
    result: RESULTS
    stats: dict
    event_times: Float[Array, " E"] | None = None

    @property
    def succeeded(self) -> Bool[Array, "*batch"]:
        """Whether the flow reached `t1`: a boolean array (per member for an ensemble),
        safe under `jit` and `vmap`."""
        return self.result == RESULTS.successful

    @property
    def successful(self) -> bool:
        """Whether the flow reached `t1` (for an ensemble: every member did). Host-side:
        under `jit`, use `succeeded`."""
        return bool(np.all(np.asarray(self.succeeded)))

    @property
    def message(self) -> str:
        """The failure's message, `''` on success; host-side.

        For an ensemble, the messages of the failed members, with their indices."""
        if self.successful:
            return ""
        succeeded = np.asarray(self.succeeded)
        if succeeded.ndim == 0:
            return RESULTS[self.result]
        failed = np.flatnonzero(~succeeded.reshape(-1))
        return "; ".join(
            f"member {i}: {RESULTS[jax.tree.map(lambda r, i=i: r.reshape(-1)[i], self.result)]}"
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
