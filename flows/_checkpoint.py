"""Long Euclidean flows in chunks, checkpointed to disk so an interrupted run resumes."""

import inspect
import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree, Scalar

from models import AbstractFactorization
from models._custom_types import RealScalarLike

from ._euclidean import euclidean_flow
from ._options import check_options
from ._solution import RESULTS, FlowSolution, SaveAt

# The defaults of `euclidean_flow`'s options, for checking a partial set up front.
_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(euclidean_flow).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in ("args", "saveat")
}


def _write_atomically(path: str, tree) -> None:
    # Write next to the target, flush to disk, then rename: a reader (or a resumed
    # run) sees either the previous checkpoint or the new one, never a torn file.
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        eqx.tree_serialise_leaves(fh, tree)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _solve_chunk(model, f, t_start, t_end, ts_chunk, args, options):
    saveat = SaveAt(ts=ts_chunk)
    return euclidean_flow(model, f, t_start, t_end, args=args, saveat=saveat, **options)


def resumable_euclidean_flow(
    model: AbstractFactorization,
    f: Callable[[PyTree[Array], Any], Scalar],
    t0: RealScalarLike,
    t1: RealScalarLike,
    *,
    path: str,
    num_chunks: int = 10,
    args: PyTree = None,
    saveat: SaveAt = SaveAt(t0=True, t1=True),
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

    - `model`, `f`, `t0`, `t1`, `args`, `saveat`: as for [`flows.euclidean_flow`][]
      (`SaveAt(params=True)` is not supported).
    - `path`: the checkpoint file. Delete it to start over.
    - `num_chunks`: how many pieces to cut $[t_0, t_1]$ into.
    - `options`: the other keyword options of [`flows.euclidean_flow`][].

    Host-side (it writes files between chunks): not for use under `jax.jit`.

    **Returns:** a [`flows.FlowSolution`][] over the saved times, with `params` = `None`
    and `final` = the model at $t_1$.

    **Raises:** `ValueError` for bad options, or if `path` holds the checkpoint of a
    different run (other times, chunks or parameter shapes); a solver failure in a
    chunk raises (or, with `throw=False`, ends the run there and is reported).
    """
    if not isinstance(saveat, SaveAt) or saveat.params:
        raise ValueError(
            "`saveat` must be a `flows.SaveAt` without `params=True` (the chunks save the "
            f"model internally), got {saveat!r}."
        )
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"`num_chunks` must be a positive integer, got {num_chunks!r}.")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a file path, got {path!r}.")
    dtype = jnp.result_type(float)
    checked = check_options(t0=t0, t1=t1, args=args, saveat=saveat, **{**_DEFAULTS, **options})
    t0_, t1_ = float(checked["t0"]), float(checked["t1"])
    ts = np.asarray(saveat.times(checked["t0"], checked["t1"]), dtype)
    bounds = np.linspace(t0_, t1_, int(num_chunks) + 1).astype(dtype)

    # The state on disk: the chunk reached, θ there, and the saves so far (NaN = not
    # yet computed). Its structure doubles as the template for deserialising.
    probe = eqx.filter_eval_shape(
        lambda m: euclidean_flow(m, f, t0_, t1_, args=args, saveat=SaveAt(ts=ts), **options),
        model,
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
        sol = _solve_chunk(state["model"], f, lo, hi, np.append(ts[inside], hi), args, options)
        result = sol.result
        idx = jnp.asarray(np.flatnonzero(inside))

        def put(full, part, idx=idx):
            return full.at[idx].set(part[:-1])

        state = {
            **state,
            "chunk": jnp.asarray(k + 1),
            "model": sol.final,
            "zs": jax.tree.map(put, state["zs"], sol.zs),
            "losses": put(state["losses"], sol.losses),
            "conserved": jax.tree.map(put, state["conserved"], sol.conserved),
            "num_steps": state["num_steps"] + sol.stats["num_steps"],
        }
        if not sol.successful:
            break
        _write_atomically(path, state)
    return FlowSolution(
        t0=checked["t0"],
        t1=checked["t1"],
        ts=jnp.asarray(ts),
        final=state["model"],
        zs=state["zs"],
        losses=state["losses"],
        conserved=state["conserved"],
        params=None,
        result=RESULTS.successful if result is None else result,
        stats={"num_steps": state["num_steps"], "num_chunks": int(num_chunks)},
    )
