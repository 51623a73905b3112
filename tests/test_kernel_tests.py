import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import manifolds
import models
from manifolds._kernel_tests import kernel_inclusion_test, recoverability_test
from manifolds._lie_algebra import lie_algebra_trace

from .helpers import dense_jacobian, dense_laws_jacobian

# (n, r, m) and the λ of a relaxed-balanced init (λ > 0 needs r ≤ n; (2, 3, 2) has
# r > max(n, m), the case left open by the paper, so only λ = 0 exists there).
TWO_LAYER = {(3, 2, 3): 0.7, (3, 2, 2): 0.7, (3, 3, 4): 0.7, (2, 3, 2): 0.0}


def _kernel_dimension(model) -> int:
    """dim(ker ∂φ ∩ ker ∂h) from dense jacfwd Jacobians of φ and of the model's laws."""
    stacked = np.concatenate([dense_jacobian(model), dense_laws_jacobian(model)])
    s = np.linalg.svd(stacked, compute_uv=False)
    return stacked.shape[1] - int(np.sum(s > 1e-9 * s[0]))


def _laws(model):
    return manifolds.laws_function(model)[0]


@pytest.mark.parametrize("nrm", sorted(TWO_LAYER))
def test_two_layer_generic_fails(nrm, getkey):
    # A generic S = UᵀU − VᵀV is not λI: kernel inclusion fails with an O(1) residual,
    # found alike from the Lie algebra (complete laws) and from the explicit laws.
    model = models.TwoLayerLinear.random(getkey(), *nrm)
    implicit = kernel_inclusion_test(model, key=getkey())
    explicit = kernel_inclusion_test(model, _laws(model))
    for res in (implicit, explicit):
        assert not res.holds and res.residual > 1e-2
        assert res.kernel_dimension == _kernel_dimension(model) >= 1
    assert implicit.residual == pytest.approx(explicit.residual, rel=1e-8)


@pytest.mark.parametrize("nrm", sorted(TWO_LAYER))
def test_two_layer_relaxed_balanced_passes(nrm, getkey):
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), *nrm, TWO_LAYER[nrm])
    for laws in (None, _laws(model)):
        res = kernel_inclusion_test(model, laws)
        assert res.holds and res.residual <= 1e-10 and res.kernel_dimension >= 1


def test_two_layer_negative_lambda_passes(getkey):
    model = models.TwoLayerLinear.relaxed_balanced(getkey(), 4, 3, 3, -0.5)
    res = kernel_inclusion_test(model)
    assert res.holds and res.residual <= 1e-10 and res.kernel_dimension >= 1


def test_bookkeeping_332(getkey):
    # THEORY §4, (n, m, r) = (3, 3, 2): D = 12, rank ∂φ = 8, 3 laws, dim of the kernel 1.
    model = models.TwoLayerLinear.random(getkey(), 3, 2, 3)
    t = lie_algebra_trace(model)
    assert (t.num_parameters, t.span_rank, t.num_conservation_laws) == (12, 8, 3)
    assert kernel_inclusion_test(model).kernel_dimension == 1
    rec = recoverability_test(model)
    assert not rec.holds and rec.kernel_dimension == 1 and rec.singular_value_gap > 1e6


@pytest.mark.parametrize("widths,lams", [((2, 2, 2), 0.5), ((3, 3, 3, 3), (0.5, -0.3))])
def test_deep_linear(widths, lams, getkey):
    generic = kernel_inclusion_test(models.DeepLinear.random(getkey(), widths))
    assert not generic.holds and generic.residual > 1e-2
    relaxed = models.DeepLinear.relaxed_balanced(getkey(), widths, lams)
    res = kernel_inclusion_test(relaxed)
    assert res.holds and res.residual <= 1e-10
    assert res.kernel_dimension == _kernel_dimension(relaxed) >= 1


@pytest.mark.parametrize("shape,depth", [((3,), 2), ((2, 2), 3)])
def test_diagonal_is_recoverable(shape, depth, getkey):
    model = models.DiagonalLinear.random(getkey(), shape, depth)
    res = kernel_inclusion_test(model, _laws(model))
    assert res.holds and res.residual == 0.0 and res.kernel_dimension == 0
    assert recoverability_test(model).holds and recoverability_test(model, _laws(model)).holds


@pytest.mark.parametrize("nrm", [(1, 2, 1), (3, 2, 3), (2, 3, 2)])
def test_recoverability_is_frobenius(nrm, getkey):
    # With complete laws, dim K(θ) = dim Lie(W)(θ) − rank ∂φ(θ).
    model = models.TwoLayerLinear.random(getkey(), *nrm)
    rec, t = recoverability_test(model), lie_algebra_trace(model)
    assert rec.holds == t.frobenius
    assert rec.kernel_dimension == t.dimension - t.span_rank == _kernel_dimension(model)


def test_bad_inputs(getkey):
    model = models.TwoLayerLinear.random(getkey(), 2, 2, 2)
    with pytest.raises(TypeError, match="laws"):
        kernel_inclusion_test(model, lambda theta: "not an array")
    with pytest.raises(TypeError):
        recoverability_test(model, 3.0)  # pyright: ignore
    broken = eqx.tree_at(lambda m: m.V, model, model.V.at[1, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="non-finite"):
        kernel_inclusion_test(broken)
    with pytest.raises(ValueError, match="non-finite"):
        recoverability_test(broken, _laws(model))
    with pytest.raises(ValueError, match="not conservation laws"):
        kernel_inclusion_test(model, lambda theta: theta.U @ theta.V.T)  # φ itself
    with pytest.raises(ValueError, match="rtol"):
        kernel_inclusion_test(model, _laws(model), rtol=2.0)
    with pytest.raises(ValueError, match="MAX_ENTRIES"):
        kernel_inclusion_test(models.TwoLayerLinear.random(getkey(), 2000, 1, 2000))


def test_undecided_lie_algebra_gives_no_verdict(getkey):
    model = models.TwoLayerLinear.random(getkey(), 3, 2, 3)
    with pytest.raises(RuntimeError, match="undecided"):
        kernel_inclusion_test(model, rtol=0.999)
