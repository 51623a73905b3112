"""Shared jaxtyping vocabulary."""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

Scalar: TypeAlias = Float[ArrayLike, ""]
Key: TypeAlias = PRNGKeyArray

__all__ = ["Array", "ArrayLike", "Float", "Key", "PyTree", "Scalar"]

RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]
