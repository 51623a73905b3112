"""Matrix-free operators whose `.mv` names a wrongly shaped vector."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import PyTree


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(jnp.shape(x)), jnp.dtype(jnp.result_type(x))) for x in leaves)


def _describe(signature) -> str:
    treedef, leaves = signature
    text = [f"shape {shape} and dtype {dtype}" for shape, dtype in leaves]
    if treedef.num_nodes == 1 and len(text) == 1:
        return text[0]
    return f"{jax.tree.unflatten(treedef, text)}"


class _CheckedMv(eqx.Module):
    # The closure-converted product behind a check of its argument: lineax hands a
    # wrongly shaped vector straight to `eqx.filter_closure_convert`, whose message names
    # neither the argument nor the shape expected.
    fn: Callable
    signature: tuple = eqx.field(static=True)
    what: str = eqx.field(static=True)

    def __call__(self, vector):
        got = _signature(vector)
        if got != self.signature:
            raise ValueError(
                f"`vector` (the argument of `.mv`) must be shaped like {self.what}, with "
                f"{_describe(self.signature)}; got {_describe(got)}."
            )
        return self.fn(vector)


def function_operator(
    mv: Callable, in_structure: PyTree[jax.ShapeDtypeStruct], tags, what: str = "z"
) -> lx.FunctionLinearOperator:
    """`lineax.FunctionLinearOperator(mv, in_structure, tags)` whose `.mv` raises a
    `ValueError` naming the expected shape and dtype for a vector not shaped like
    `in_structure` (`what` says what it should be shaped like)."""
    converted = eqx.filter_closure_convert(mv, in_structure)
    return lx.FunctionLinearOperator(
        _CheckedMv(converted, _signature(in_structure), what),
        in_structure,
        tags,
        closure_convert=False,
    )
