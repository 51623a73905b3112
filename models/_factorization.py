"""The abstract factorization θ ↦ z = φ(θ)."""

import abc

import equinox as eqx
from jaxtyping import Array, PyTree


class AbstractFactorization(eqx.Module):
    r"""A lifting $\varphi: \mathbb{R}^D \to \mathbb{R}^d$ written as an Equinox module.

    The parameters $\theta$ are the module's floating-point array leaves; everything
    else (widths, modes) is static. The loss of a network with this factorization is
    $\ell(\theta) = f(\varphi(\theta))$, so the Euclidean gradient flow
    $\theta' = -\nabla\ell(\theta)$ induces $z' = -M(\theta)\nabla f(z)$ on $z = \varphi(\theta)$
    with the induced metric $M(\theta) = \partial\varphi(\theta)\partial\varphi(\theta)^\top$
    (see [`manifolds.induced_metric`][]).

    Subclass it to add an architecture: implement [`models.AbstractFactorization.lift`][]
    and [`models.AbstractFactorization.conservation_laws`][]; the induced metric, the
    flows and the tests come for free, since they are written once against this class.
    """

    @abc.abstractmethod
    def lift(self) -> PyTree[Array]:
        r"""Return $z = \varphi(\theta)$ in its natural shape (e.g. an $n\times m$ matrix)."""

    @abc.abstractmethod
    def conservation_laws(self) -> PyTree[Array]:
        r"""Return the analytic conservation laws $h(\theta)$.

        Each entry $h_i$ satisfies $\nabla h_i(\theta) \perp \nabla\varphi_j(\theta)$ for every
        $j$, so $h(\theta(t)) = h(\theta(0))$ along the gradient flow of any loss
        $f(\varphi(\theta))$.
        """
