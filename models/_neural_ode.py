r"""A nonlinear neural ODE $x'(s) = g_\theta(x(s))$ with an MLP vector field."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._checks import check_positive_int
from ._custom_types import Key, RealScalarLike
from ._depth_solve import check_options, options_of, resolve_adjoint, solve_in_depth


def _field(s, x, mlp):
    # The MLP comes in as `args` so that every adjoint differentiates with respect to it.
    return mlp(x)


class NeuralODE(eqx.Module):
    r"""The map $x \mapsto x(1)$ of $x'(s) = g_\theta(x(s))$, $x(0) = x$, $s \in [0, 1]$.

    $g_\theta$ is an `equinox.nn.MLP` from $\mathbb{R}^n$ to $\mathbb{R}^n$; its weights and
    biases are the parameters $\theta$. The depth solve is `diffrax.diffeqsolve` with the
    given solver, tolerances and adjoint, as for [`models.LinearNeuralODE`][] (which is
    the case $g(x) = A(s)x$, time-dependent and linear).

    It is not a factorization by itself: wrap it in [`models.OutputLifting`][] with a
    batch of inputs to get $\varphi(\theta) = (x_i(1))_i$, whose induced metric is the
    empirical neural tangent kernel. There are no known conservation laws for a generic
    MLP vector field.

    As for [`models.LinearNeuralODE`][], the default `diffrax.DirectAdjoint()` supports
    reverse mode, forward mode and [`manifolds.induced_metric`][] (a transposed
    linearization); `RecursiveCheckpointAdjoint` and `BacksolveAdjoint` save memory but
    are reverse mode only, `ForwardMode` is forward mode only.
    """

    mlp: eqx.nn.MLP
    solver: dfx.AbstractSolver
    adjoint: dfx.AbstractAdjoint
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    num_steps: int | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width_size: int,
        depth: int,
        *,
        key: Key,
        activation: Callable = jax.nn.tanh,
        solver: dfx.AbstractSolver = dfx.Tsit5(),
        adjoint: dfx.AbstractAdjoint | str = dfx.DirectAdjoint(),
        rtol: RealScalarLike | None = None,
        atol: RealScalarLike | None = None,
        num_steps: int | None = None,
        max_steps: int = 4096,
    ):
        r"""**Arguments:**

        - `dim`: the state dimension $n$ (inputs and outputs).
        - `width_size`, `depth`: hidden width and number of hidden layers of the MLP.
        - `key`: a JAX PRNG key for the MLP's initialization.
        - `activation`: the MLP's activation (default `tanh`, smooth, so the flow is).
        - `solver`, `adjoint`, `rtol`, `atol`, `num_steps`, `max_steps`: the depth solve,
          as for [`models.LinearNeuralODE`][].

        **Raises:** `ValueError` for non-positive sizes, an unknown adjoint name or bad
        tolerances; `TypeError` for a non-diffrax solver or an `adjoint` that is not a
        `diffrax.AbstractAdjoint`.
        """
        dim = check_positive_int(dim, "dim")
        width_size = check_positive_int(width_size, "width_size")
        if isinstance(depth, bool) or int(depth) != depth or int(depth) < 0:
            raise ValueError(f"`depth` must be a non-negative integer, got {depth!r}.")
        self.mlp = eqx.nn.MLP(dim, dim, width_size, int(depth), activation=activation, key=key)
        self.solver = solver
        self.adjoint = resolve_adjoint(adjoint)
        dtype = self.mlp.layers[0].weight.dtype
        self.rtol, self.atol, self.num_steps, self.max_steps = check_options(
            solver, rtol, atol, num_steps, max_steps, dtype
        )

    @property
    def dim(self) -> int:
        """The state dimension $n$."""
        return self.mlp.in_size

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        r"""$x(1)$ from $x(0) = $ `x` (one input; `jax.vmap` it over a batch)."""
        if x.shape != (self.dim,):
            raise ValueError(f"`x` must have shape ({self.dim},), got {x.shape}.")
        return solve_in_depth(_field, x, self.mlp, **options_of(self))
