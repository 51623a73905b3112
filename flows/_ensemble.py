"""Ensembles of flows: many initializations integrated together with `jax.vmap`."""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, PyTree, Scalar

from models import AbstractFactorization
from models._custom_types import RealScalarLike

from ._euclidean import euclidean_flow
from ._intrinsic import intrinsic_flow
from ._options import as_traced
from ._solution import FlowSolution


def stack(trees: Sequence[PyTree]) -> PyTree:
    r"""Stack same-structured PyTrees (models, metrics, states) along a new leading axis.

    The array leaves are stacked; everything else (widths, modes, functions) must be
    equal across `trees` and is kept once. The result is the batched input of
    [`flows.euclidean_ensemble`][] and [`flows.intrinsic_ensemble`][].

    **Raises:** `ValueError` if `trees` is empty or the trees differ in structure or in
    their non-array parts.
    """
    trees = list(trees)
    if not trees:
        raise ValueError("`trees` must contain at least one tree, got an empty sequence.")
    parts = [eqx.partition(t, eqx.is_array) for t in trees]
    static = parts[0][1]
    for i, (_, s) in enumerate(parts[1:], start=1):
        if not eqx.tree_equal(s, static):
            raise ValueError(
                f"`trees[{i}]` differs from `trees[0]` outside its arrays (structure, "
                "widths or static options); only same-architecture trees can be stacked."
            )
    shapes = [jax.tree.map(jnp.shape, a) for a, _ in parts]
    for i, s in enumerate(shapes[1:], start=1):
        if s != shapes[0]:
            raise ValueError(f"`trees[{i}]` has array shapes {s}, but `trees[0]` has {shapes[0]}.")
    arrays = jax.tree.map(lambda *xs: jnp.stack(xs), *(a for a, _ in parts))
    return eqx.combine(arrays, static)


def _batch_size(batched, name) -> int:
    sizes = {
        x.shape[0] if x.ndim else None for x in jax.tree.leaves(eqx.filter(batched, eqx.is_array))
    }
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"`{name}` must have a leading batch axis of one common size on every array "
            f"leaf (build it with `flows.stack`), got leading sizes {sorted(map(str, sizes))}."
        )
    return sizes.pop()


def _place(batched, size, sharding):
    # Pad the batch to a multiple of the number of devices (repeating the last
    # member), then lay the batch axis out over the devices.
    if sharding is None:
        return batched, size
    num = len(sharding.device_set)
    padded = -(-size // num) * num
    arrays, static = eqx.partition(batched, eqx.is_array)
    if padded != size:
        arrays = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - size, axis=0)]), arrays
        )
    arrays = jax.device_put(arrays, sharding)
    return eqx.combine(arrays, static), padded


def _unpad(sol, size):
    return jax.tree.map(lambda x: x[:size] if eqx.is_array(x) and x.ndim else x, sol)


def euclidean_ensemble(
    models: AbstractFactorization,
    f: Callable[[PyTree[Array], Any], Scalar],
    t0: RealScalarLike,
    t1: RealScalarLike,
    *,
    args: PyTree = None,
    sharding: jax.sharding.Sharding | None = None,
    **options,
) -> FlowSolution:
    r"""[`flows.euclidean_flow`][] for a batch of initializations, with `jax.vmap`.

    Each member $\theta_0^{(b)}$ gets its own trajectory with its own adaptive steps (the
    solve runs until the slowest member finishes; finished members idle). A member
    that fails is reported in its own `result` entry (`throw=False` semantics), the
    others are unaffected. Equivalent to `eqx.filter_vmap` of
    [`flows.euclidean_flow`][] (which is safe under `vmap`), plus padding and placement
    on the devices of a `sharding`.

    **Arguments:**

    - `models`: one model whose array leaves have a leading batch axis, e.g.
      `flows.stack([m1, m2, ...])` or an `eqx.filter_vmap`-ed constructor.
    - `f`, `t0`, `t1`, `args`: as for [`flows.euclidean_flow`][]; the loss and `args`
      are shared by all members.
    - `sharding`: optionally a `jax.sharding.Sharding` of the batch axis, e.g.
      `NamedSharding(Mesh(jax.devices(), ("batch",)), PartitionSpec("batch"))`: the
      members are then integrated in parallel on the mesh's devices (padded to a
      multiple of the number of devices), with results identical to one device.
    - `options`: the keyword options of [`flows.euclidean_flow`][] (`throw` is
      forced to `False`).

    **Returns:** a [`flows.FlowSolution`][] whose leaves have a leading batch axis;
    `solution.succeeded` says which members reached `t1`.
    """
    size = _batch_size(models, "models")
    _check_sharding(sharding)
    arrays, static = eqx.partition(models, eqx.is_array)
    try:
        jax.eval_shape(
            lambda a: eqx.combine(a, static).lift(), jax.tree.map(lambda x: x[0], arrays)
        )
    except Exception as e:
        raise ValueError(
            "`models` must carry a leading batch axis on every array leaf, but one member "
            f"(the leaves without their leading axis) is not a valid model: {e}"
        ) from None
    t0, t1, options = as_traced(t0, t1, {**options, "throw": False})
    batched, _ = _place(models, size, sharding)
    return _unpad(_euclidean_batch(batched, f, t0, t1, args, options, sharding), size)


def _check_sharding(sharding):
    if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError(
            "`sharding` must be a `jax.sharding.Sharding` of the batch axis (e.g. "
            "`NamedSharding(Mesh(jax.devices(), ('batch',)), PartitionSpec('batch'))`) or "
            f"None, got {sharding!r}."
        )


# Module-level jitted functions, so that repeated calls with the same shapes, loss and
# options reuse one compiled program and pay no tracing (a jit of a fresh closure would
# retrace and recompile on every call). Times, tolerances and `args` are traced.
@eqx.filter_jit
def _euclidean_batch(batched, f, t0, t1, args, options, sharding):
    solve = eqx.filter_vmap(lambda m: euclidean_flow(m, f, t0, t1, args=args, **options))
    return _per_device(solve, batched, sharding)


@eqx.filter_jit
def _intrinsic_batch(batched, K, f, t0, t1, args, options, sharding):
    if K is None:  # one metric per member, batched with z0
        solve = eqx.filter_vmap(
            lambda kz: intrinsic_flow(kz[0], f, t0, t1, kz[1], args=args, **options)
        )
    else:
        solve = eqx.filter_vmap(lambda z: intrinsic_flow(K, f, t0, t1, z, args=args, **options))
    return _per_device(solve, batched, sharding)


def _per_device(solve, batched, sharding):
    r"""`solve(batched)`, with each device integrating its own members under a mesh.

    A `jit` of the vmapped solve over a sharded batch would keep one while loop for the
    whole batch, whose condition ("some member is not done") is a reduction across the
    devices at every step. Under `jax.shard_map` each device runs its own loop over its
    local members and stops when they are done: no communication at all.
    """
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return solve(batched)  # no sharding, or a layout we leave to XLA
    arrays, static = eqx.partition(batched, eqx.is_array)
    out_static = []

    def local(arrays):
        out = solve(eqx.combine(arrays, static))
        out_arrays, rest = eqx.partition(out, eqx.is_array)
        out_static.append(rest)
        return out_arrays

    spec = sharding.spec
    # check_vma=False: diffrax's loops start from unsharded constants (e.g. the step
    # counter) that become per-device values; every output is per-device anyway.
    mapped = jax.shard_map(
        local, mesh=sharding.mesh, in_specs=(spec,), out_specs=spec, check_vma=False
    )
    out_arrays = mapped(arrays)
    return eqx.combine(out_arrays, out_static[0])


def intrinsic_ensemble(
    K: Callable[[PyTree[Array]], lx.AbstractLinearOperator],
    f: Callable[[PyTree[Array], Any], Scalar],
    t0: RealScalarLike,
    t1: RealScalarLike,
    z0: PyTree[Array],
    *,
    args: PyTree = None,
    sharding: jax.sharding.Sharding | None = None,
    **options,
) -> FlowSolution:
    r"""[`flows.intrinsic_flow`][] for a batch of initial states and level sets.

    **Arguments:**

    - `K`: an intrinsic metric whose array leaves (the conserved values of each
      member's level set) have a leading batch axis (`flows.stack` of
      `manifolds.intrinsic_metric(m)` for each member, or `eqx.filter_vmap` of it over
      a batch of models), or a single metric shared by all.
    - `z0`: the initial states with a leading batch axis.
    - `f`, `t0`, `t1`, `args`, `sharding`, `options`: as for [`flows.euclidean_ensemble`][].

    **Returns:** a batched [`flows.FlowSolution`][].
    """
    size = _batch_size(z0, "z0")
    _check_sharding(sharding)
    k_arrays = eqx.filter(K, eqx.is_array)
    k_batched = bool(jax.tree.leaves(k_arrays))
    if k_batched and _batch_size(K, "K") != size:
        raise ValueError(
            f"`K` has a batch of {_batch_size(K, 'K')} metrics but `z0` has {size} states."
        )
    t0, t1, options = as_traced(t0, t1, {**options, "throw": False})
    batched, _ = _place((K, z0) if k_batched else z0, size, sharding)
    shared = None if k_batched else K
    return _unpad(_intrinsic_batch(batched, shared, f, t0, t1, args, options, sharding), size)
