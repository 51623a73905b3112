"""A loss on a network's outputs over a fixed dataset."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar


def half_mean_squared_error(
    outputs: Float[Array, "N n_out"], targets: Float[Array, "N n_out"], args: Any = None
) -> Scalar:
    r"""$\frac{1}{2N}\sum_{i=1}^N \|y_i - \hat y_i\|^2$ (`args` is unused)."""
    del args
    return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


class OutputLoss(eqx.Module):
    r"""A loss on the outputs of a network over a fixed dataset.

    $$\ell(\theta) = L\big((g_\theta(x_i))_{i=1}^N, (y_i)_{i=1}^N\big),$$

    with $g_\theta$ the network (the model's `__call__` on one input, mapped over the
    batch with `jax.vmap`) and $L$ = `loss` (default: half the mean squared error).

    Pass it as the loss `f` of [`flows.euclidean_flow`][] for a model that is a network
    (it has `__call__`), and of [`flows.intrinsic_flow`][] with a ReLU metric: there,
    the outputs are computed from $z$ through the path-lifting,
    $g(x) = \sum_p z_p\, a_p(x)\, x_{\mathrm{start}(p)}$, with the current activation pattern
    $a$ on the inputs. For a ReLU network this loss is smooth only on each region
    of constant activation pattern, and both flows stop at each change of pattern
    (a `diffrax.Event`) and restart with the new one; the times are in
    `FlowSolution.event_times`.

    **Fields:**

    - `inputs`: the inputs $x_i$, shape `(N, n_in)`.
    - `targets`: the targets $y_i$, shape `(N, n_out)`.
    - `loss`: `(outputs, targets, args) -> scalar`; `args` is the flow's `args`.

    The data are array fields: a new dataset of the same shapes is a new value of the
    same structure, and recompiles nothing.
    """

    inputs: Float[Array, "N n_in"] = eqx.field(converter=jnp.asarray)
    targets: Float[Array, "N n_out"] = eqx.field(converter=jnp.asarray)
    loss: Callable = half_mean_squared_error

    def __check_init__(self):
        if self.inputs.ndim != 2 or self.targets.ndim != 2:
            raise ValueError(
                "`inputs` and `targets` must be 2-D arrays (samples first), got shapes "
                f"{self.inputs.shape} and {self.targets.shape}."
            )
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"`inputs` has {self.inputs.shape[0]} samples but `targets` has "
                f"{self.targets.shape[0]}."
            )

    def __call__(self, network: Callable, args: Any = None) -> Scalar:
        """The loss of `network` (a function of one input) on the dataset."""
        return self.loss(jax.vmap(network)(self.inputs), self.targets, args)
