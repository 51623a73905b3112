r"""Any network as a factorization: $\varphi(\theta)$ = its outputs on a fixed batch."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Shaped

from ._factorization import AbstractFactorization

# Unsigned integer types of the same width, to store floating inputs bit for bit.
_BITS = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


class OutputLifting(AbstractFactorization):
    r"""The outputs of a network on a fixed batch, as a lifting: $\varphi(\theta) = (g_\theta(x_i))_{i=1}^N$.

    For any Equinox model $g_\theta$ (a callable on one input, mapped over the batch
    with `jax.vmap`) and inputs $x_1, \dots, x_N$, the parameters $\theta$ are the
    model's floating-point array leaves. A loss on the outputs, $\ell(\theta) =
    f(\varphi(\theta))$, then has the Euclidean gradient flow of
    [`flows.euclidean_flow`][], and the induced metric

    $$M(\theta) = \partial\varphi(\theta)\,\partial\varphi(\theta)^\top,\qquad
    M_{(i,a),(j,b)} = \langle\nabla_\theta g_\theta(x_i)_a, \nabla_\theta g_\theta(x_j)_b\rangle,$$

    is the empirical neural tangent kernel Gram matrix on the batch
    ([`manifolds.induced_metric`][]), so every tool of `manifolds` and `flows` applies
    to any architecture, e.g. [`models.NeuralODE`][].

    The inputs are data, not parameters: they are stored bit-cast to an unsigned
    integer type of the same width, so `equinox.is_inexact_array`, which defines
    $\theta$ throughout the library, skips them (and they are recovered exactly).

    **Conservation laws.** None in general: [`models.OutputLifting.conservation_laws`][]
    returns an empty array. Architecture-specific laws (e.g. of a ReLU or linear
    network) are found numerically with [`manifolds.lie_algebra_trace`][].
    """

    model: Callable
    stored_inputs: Shaped[Array, "N ..."]
    input_dtype: str | None = eqx.field(static=True)

    def __init__(self, model: Callable, inputs):
        r"""**Arguments:**

        - `model`: an Equinox model (any PyTree that is callable on one input).
        - `inputs`: the batch, shape `(N, *input_shape)` with $N \ge 1$.

        **Raises:** `ValueError` when the inputs have no batch axis, the model cannot be
        applied to one of them (the message repeats the model's error), or the model has
        no floating-point parameters; `TypeError` when `model` is not callable.
        """
        if not callable(model):
            raise TypeError(f"`model` must be callable on one input, got {type(model).__name__}.")
        inputs = jnp.asarray(inputs)
        if inputs.ndim < 1 or inputs.shape[0] < 1:
            raise ValueError(
                "`inputs` must be a batch with a leading axis of at least one sample, "
                f"got shape {inputs.shape}."
            )
        try:
            jax.eval_shape(jax.vmap(model), inputs)
        except Exception as e:
            raise ValueError(
                f"`model` cannot be applied to one input of shape {inputs.shape[1:]} (from "
                f"`inputs` of shape {inputs.shape}, samples first): {type(e).__name__}: {e}"
            ) from None
        if not jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)):
            raise ValueError(
                f"`model` ({type(model).__name__}) has no floating-point array leaves, so "
                "there are no parameters to train."
            )
        if jnp.issubdtype(inputs.dtype, jnp.complexfloating):
            raise TypeError(f"`inputs` must be real, got dtype {inputs.dtype}.")
        self.model = model
        if jnp.issubdtype(inputs.dtype, jnp.floating):
            self.input_dtype = jnp.dtype(inputs.dtype).name
            bits = _BITS[inputs.dtype.itemsize]
            self.stored_inputs = jax.lax.bitcast_convert_type(inputs, bits)
        else:
            self.input_dtype = None
            self.stored_inputs = inputs

    @property
    def inputs(self) -> Shaped[Array, "N ..."]:
        """The batch $x_1, \\dots, x_N$, as given."""
        if self.input_dtype is None:
            return self.stored_inputs
        return jax.lax.bitcast_convert_type(self.stored_inputs, jnp.dtype(self.input_dtype))

    def lift(self) -> PyTree[Array]:
        r"""$(g_\theta(x_i))_{i=1}^N$: the model mapped over the batch (leading axis $N$)."""
        return jax.vmap(self.model)(self.inputs)

    def conservation_laws(self) -> Float[Array, " 0"]:
        """An empty array: no conservation laws are known for a generic network."""
        dtypes = [x.dtype for x in jax.tree.leaves(eqx.filter(self.model, eqx.is_inexact_array))]
        return jnp.zeros((0,), jnp.result_type(*dtypes))

    def __call__(self, x):
        """The wrapped model on one input (so an [`flows.OutputLoss`][] applies too)."""
        return self.model(x)
