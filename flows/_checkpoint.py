"""Long Euclidean flows in chunks, checkpointed to disk so an interrupted run resumes."""

import os
from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree, Real, Scalar

from models import AbstractFactorization
from models._custom_types import RealScalarLike

from ._euclidean import euclidean_flow
from ._solution import FlowSolution


def _write_atomically(path: str, tree) -> None:
    # Write next to the target, flush to disk, then rename: a reader (or a resumed
    # run) sees either the previous checkpoint or the new one, never a torn file.
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        eqx.tree_serialise_leaves(fh, tree)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _solve_chunk(model, f, t_start, t_end, ts_chunk, options):
    return euclidean_flow(model, f, t_end, t0=t_start, ts=ts_chunk, save_params=True, **options)


def resumable_euclidean_flow(
    model: AbstractFactorization,
    f: Callable[[PyTree[Array]], Scalar],
    t1: RealScalarLike,
    *,
    path: str,
    num_chunks: int = 10,
    t0: RealScalarLike = 0.0,
    ts: Real[ArrayLike, " T"] | Sequence[float] | None = None,
    **options,
) -> FlowSolution:
    r"""[`flows.euclidean_flow`][] in `num_chunks` chunks, checkpointed to `path`.

    $[t_0, t_1]$ is cut into `num_chunks` equal chunks. After each one, $\theta$ at the
    chunk's end and everything saved so far are written to `path` with
    `equinox.tree_serialise_leaves`, atomically (a temporary file renamed over the
    previous checkpoint). Calling again with the same arguments after an interruption
    resumes from the last completed chunk, so at most one chunk is recomputed; the
    result is identical to an uninterrupted chunked run. (Restarting the solver at
    each chunk changes the step sequence, so it differs from a single
    [`flows.euclidean_flow`][] solve by the solver tolerance.)

    **Arguments:**

    - `model`, `f`, `t1`, `t0`, `ts`: as for [`flows.euclidean_flow`][].
    - `path`: the checkpoint file. Delete it to start over.
    - `num_chunks`: how many pieces to cut $[t_0, t_1]$ into.
    - `options`: the other keyword options of [`flows.euclidean_flow`][] (`save_params`
      is used internally and not accepted).

    **Returns:** a [`flows.FlowSolution`][] over all of `ts`, with `params` = `None`.

    **Raises:** `ValueError` for bad options, or if `path` holds the checkpoint of a
    different run (other times, chunks or parameter shapes); a solver failure in a
    chunk raises (or, with `throw=False`, ends the run there and is reported).
    """
    if "save_params" in options:
        raise ValueError("`save_params` is not supported by resumable_euclidean_flow.")
    if int(num_chunks) < 1:
        raise ValueError(f"`num_chunks` must be a positive integer, got {num_chunks}.")
    dtype = jnp.result_type(float)
    t0_, t1_ = float(t0), float(t1)
    if not t1_ > t0_:
        raise ValueError(f"`t1` must be greater than `t0` = {t0_}, got {t1_}.")
    ts = np.array([t0_, t1_], dtype) if ts is None else np.asarray(ts, dtype)
    bounds = np.linspace(t0_, t1_, int(num_chunks) + 1).astype(dtype)

    # The state on disk: the chunk reached, θ there, and the saves so far (NaN = not
    # yet computed). Its structure doubles as the template for deserialising.
    probe = eqx.filter_eval_shape(
        lambda m: euclidean_flow(m, f, t1_, t0=t0_, ts=ts, **options), model
    )
    state = {
        "run": jnp.asarray(np.concatenate([ts, bounds])),
        "chunk": jnp.asarray(0),
        "model": model,
        "zs": jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), probe.zs),
        "losses": jnp.full(probe.losses.shape, jnp.nan, probe.losses.dtype),
        "conserved": jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), probe.conserved),
        "num_steps": jnp.asarray(0),
    }
    if os.path.exists(path):
        try:
            loaded = eqx.tree_deserialise_leaves(path, state)
        except Exception as e:
            raise ValueError(
                f"`path` = {path!r} holds a checkpoint of a different run (cannot read it "
                f"as one for this model: {e}); delete it or choose another path."
            ) from None
        if not np.array_equal(np.asarray(loaded["run"]), np.asarray(state["run"])):
            raise ValueError(
                f"`path` = {path!r} holds a checkpoint of a run with other times or "
                "chunks; delete it or choose another path."
            )
        state = loaded

    result = None
    for k in range(int(state["chunk"]), int(num_chunks)):
        lo, hi = bounds[k], bounds[k + 1]
        inside = (ts > lo) & (ts <= hi) if k else (ts >= lo) & (ts <= hi)
        sol = _solve_chunk(state["model"], f, lo, hi, np.append(ts[inside], hi), options)
        result = sol.result
        idx = jnp.asarray(np.flatnonzero(inside))

        def put(full, part, idx=idx):
            return full.at[idx].set(part[:-1])

        state = {
            **state,
            "chunk": jnp.asarray(k + 1),
            "model": jax.tree.map(lambda x: x[-1] if eqx.is_array(x) else x, sol.params),
            "zs": jax.tree.map(put, state["zs"], sol.zs),
            "losses": put(state["losses"], sol.losses),
            "conserved": jax.tree.map(put, state["conserved"], sol.conserved),
            "num_steps": state["num_steps"] + sol.stats["num_steps"],
        }
        if not sol.successful:
            break
        _write_atomically(path, state)
    return FlowSolution(
        ts=jnp.asarray(ts),
        zs=state["zs"],
        losses=state["losses"],
        conserved=state["conserved"],
        params=None,
        result=dfx.RESULTS.successful if result is None else result,
        stats={"num_steps": state["num_steps"], "num_chunks": int(num_chunks)},
    )
