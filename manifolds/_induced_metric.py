"""The induced metric M(θ) = ∂φ(θ) ∂φ(θ)ᵀ, matrix-free."""

import jax
import lineax as lx

from models import AbstractFactorization

from ._lifting import lifting_function
from ._operator import function_operator


def induced_metric(model: AbstractFactorization) -> lx.FunctionLinearOperator:
    r"""The induced metric $M(\theta) = \partial\varphi(\theta)\,\partial\varphi(\theta)^\top$.

    Along the gradient flow $\theta' = -\nabla_\theta f(\varphi(\theta))$, the lifted variable
    obeys $z' = -M(\theta)\nabla f(z)$.

    The operator acts on $z$-shaped arrays, matrix-free: $M g = \partial\varphi(\partial\varphi^\top g)$
    is one transposed-linearization (vjp) and one linearization (jvp) product; the
    forward pass is linearized once, when the operator is built. Nothing of size $D\times d$
    or $d\times d$ is formed unless you call `.as_matrix()` (which gives $JJ^\top$).

    **Arguments:**

    - `model`: any [`models.AbstractFactorization`][]; its parameters are $\theta$.

    **Returns:** a `lineax.FunctionLinearOperator` tagged symmetric and positive semidefinite.
    """
    phi, theta = lifting_function(model)
    z, jvp_fn = jax.linearize(phi, theta)
    vjp_fn = jax.linear_transpose(jvp_fn, theta)

    def mv(g):
        (v,) = vjp_fn(g)
        return jvp_fn(v)

    return function_operator(
        mv,
        jax.eval_shape(lambda: z),
        (lx.symmetric_tag, lx.positive_semidefinite_tag),
        "model.lift()",
    )
