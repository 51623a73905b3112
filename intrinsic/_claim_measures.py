"""The measurements behind `intrinsic reproduce`: one function per quantity that decides a
claim of the theory, evaluated on one configuration (see `intrinsic._claims.CLAIMS`)."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import manifolds
import models
from flows import SaveAt, euclidean_flow, intrinsic_flow, relative_deviation

from ._examples import EXAMPLES


def _relative_gap(K, model) -> float:
    """$\\|K(\\varphi(\\theta)) - M(\\theta)\\|_F / \\|M(\\theta)\\|_F$ with dense matrices."""
    k = np.asarray(K(model.lift()).as_matrix())
    m = np.asarray(manifolds.induced_metric(model).as_matrix())
    return float(np.linalg.norm(k - m) / np.linalg.norm(m))


def _level_set_gap(sample, num_points: int, seed: int) -> float:
    # K from one point of the level set, M at others: the intrinsic metric property.
    keys = jax.random.split(jax.random.key(seed), num_points + 1)
    K = manifolds.intrinsic_metric(sample(keys[0]))
    return max(_relative_gap(K, sample(k)) for k in keys[1:])


def two_layer_level_set(n, r, m, lam, seed=0, num_points=3):
    return _level_set_gap(
        lambda k: models.TwoLayerLinear.relaxed_balanced(k, n, r, m, lam), num_points, seed
    )


def deep_level_set(widths, lams, seed=0, num_points=3):
    return _level_set_gap(
        lambda k: models.DeepLinear.relaxed_balanced(k, widths, lams), num_points, seed
    )


def diagonal_level_set(shape, depth, lams, seed=0, num_points=3):
    return _level_set_gap(
        lambda k: models.DiagonalLinear.relaxed_balanced(k, shape, depth, lams), num_points, seed
    )


def _deviation(model, loss, K, t1) -> float:
    ts = jnp.linspace(0.0, t1, 11)
    options = dict(
        saveat=SaveAt(ts=ts), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)
    )
    euclidean = euclidean_flow(model, loss, 0.0, t1, **options)
    intrinsic = intrinsic_flow(K, loss, 0.0, t1, model.lift(), **options)
    return float(jnp.max(relative_deviation(euclidean, intrinsic)))


def example_flows(example, **overrides):
    """Relative deviation $\\max_t\\|\\varphi(\\theta(t)) - z(t)\\|/\\max_t\\|z\\|$ on a built-in example."""
    config = {**EXAMPLES[example].defaults, "seed": 0, **overrides}
    model, loss, K = EXAMPLES[example].build(config)
    return _deviation(model, loss, K, config["t1"])


def two_layer_law_counts(n, r, m, seed=0):
    """(laws from the Lie algebra, polynomial laws of degree ≤ 2 from SymPy)."""
    model = models.TwoLayerLinear.random(jax.random.key(seed), n, r, m)
    trace = manifolds.lie_algebra_trace(model)
    symbolic = manifolds.polynomial_conservation_laws(model, degree=2)
    return trace.num_conservation_laws, len(symbolic.laws)


def deep_law_counts(widths, seed=0):
    """(D, rank ∂φ, dim Lie(W), laws, Frobenius) at a random θ."""
    trace = manifolds.lie_algebra_trace(models.DeepLinear.random(jax.random.key(seed), widths))
    return (
        trace.num_parameters,
        trace.span_rank,
        trace.dimension,
        trace.num_conservation_laws,
        trace.frobenius,
    )


def diagonal_verdicts(shape, depth, seed=0):
    """(laws, Frobenius, recoverable) at a random θ."""
    model = models.DiagonalLinear.random(jax.random.key(seed), shape, depth)
    trace = manifolds.lie_algebra_trace(model)
    return trace.num_conservation_laws, trace.frobenius, manifolds.recoverability_test(model).holds


def kernel_bookkeeping(n, r, m, seed=0):
    """(D, rank ∂φ, laws, dim(ker ∂φ ∩ ker ∂h)) at a random θ."""
    model = models.TwoLayerLinear.random(jax.random.key(seed), n, r, m)
    trace = manifolds.lie_algebra_trace(model)
    test = manifolds.kernel_inclusion_test(model)
    return trace.num_parameters, trace.span_rank, trace.num_conservation_laws, test.kernel_dimension


def kernel_residual_random(n, r, m, seed=0):
    model = models.TwoLayerLinear.random(jax.random.key(seed), n, r, m)
    return manifolds.kernel_inclusion_test(model).residual


def kernel_residual_relaxed(n, r, m, lam, seed=0):
    model = models.TwoLayerLinear.relaxed_balanced(jax.random.key(seed), n, r, m, lam)
    return manifolds.kernel_inclusion_test(model).residual


def wide_flows(r, seed=0, t1=5.0):
    r"""$n = m = 1 < r$, generic $S$: the Euclidean flow against the intrinsic flow with
    $K(z) = \sqrt{4z^2 + 2\|S\|_F^2 - (\mathrm{tr}\,S)^2}$, the $uv$ metric with that $\delta^2$."""
    kmodel, kdata = jax.random.split(jax.random.key(seed))
    model = models.TwoLayerLinear.random(kmodel, 1, r, 1)
    S = model.conservation_laws()
    delta = jnp.sqrt(2 * jnp.sum(S**2) - jnp.trace(S) ** 2)
    K = manifolds.DiagonalChainMetric(jnp.reshape(delta, (1, 1, 1)))
    target = jax.random.normal(kdata, (1, 1))
    return _deviation(model, lambda z, args: 0.5 * jnp.sum((z - target) ** 2), K, t1)


def reference_two_layer():
    r"""THEORY §4: $U = \mathrm{diag}(2, \sqrt2)$, $V = \mathrm{diag}(\sqrt3, 1)$; $K[E_{ij}]_{ij}$ and
    $\max|K - M|$."""
    U, V = jnp.diag(jnp.array([2.0, 2.0**0.5])), jnp.diag(jnp.array([3.0**0.5, 1.0]))
    model = models.TwoLayerLinear(U, V)
    K = manifolds.intrinsic_metric(model)(model.lift()).as_matrix()
    M = manifolds.induced_metric(model).as_matrix()
    diagonal = np.diag(np.asarray(K))  # K[E_ij] = k_ij E_ij: diagonal in the basis E_ij
    off = float(np.max(np.abs(np.asarray(K) - np.diag(diagonal))))
    return (*diagonal.tolist(), off, float(np.max(np.abs(np.asarray(K - M)))))


def reference_uv():
    """THEORY §3: $(u, v) = (2, 1)$ gives $z = 2$, $|\\delta| = 3$, $K = M = 5$."""
    model = models.DiagonalLinear([jnp.array(2.0), jnp.array(1.0)])
    z = model.lift()
    K = manifolds.intrinsic_metric(model)(z).as_matrix()
    M = manifolds.induced_metric(model).as_matrix()
    return float(z), float(jnp.abs(model.conservation_laws()[0])), float(K[0, 0]), float(M[0, 0])


def neural_ode_metric_gap(n, degree, lam, seed=0):
    r"""Relaxed-balanced linear neural ODE (Legendre degree $p$): the log-mean $K(\varphi(A))$
    against the Galerkin induced metric $M(A)$, dense, relative Frobenius gap."""
    model = models.LinearNeuralODE.relaxed_balanced(
        jax.random.key(seed), n, degree=degree, lam=lam, adjoint=dfx.DirectAdjoint()
    )
    return _relative_gap(manifolds.intrinsic_metric(model), model)


def uv_mirror(d=3, delta=0.5, seed=0):
    model = models.DiagonalLinear.relaxed_balanced(jax.random.key(seed), (d,), 2, delta)
    K = manifolds.intrinsic_metric(model)
    return manifolds.mirror_flow_test(K, model.lift()).residual


def relu_verdicts(widths, bias=False, skip=(), seed=0):
    """(D, #paths, #hidden, rank ∂Φ, dim Lie(W), laws, Frobenius, recoverable) at random θ."""
    config = {**EXAMPLES["relu"].defaults, "widths": widths, "bias": bias, "skip": skip}
    model = EXAMPLES["relu"].build_random({**config, "seed": seed})
    trace = manifolds.lie_algebra_trace(model)
    return (
        trace.num_parameters,
        model.num_paths,
        model.num_hidden,
        trace.span_rank,
        trace.dimension,
        trace.num_conservation_laws,
        trace.frobenius,
        manifolds.recoverability_test(model).holds,
    )
