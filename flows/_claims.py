"""The claims checked by `intrinsic reproduce`: measurements and the registry `CLAIMS`.

One entry of `CLAIMS` per claim of the theory (THEORY.md §1–§4, the docs' theory primer): the
quantity that decides it, measured on each configuration, and how it is judged. An
architecture with claims of its own adds its entries here.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import manifolds
import models

from ._euclidean import euclidean_flow
from ._examples import EXAMPLES
from ._intrinsic import intrinsic_flow
from ._reproduce import AtLeast, AtMost, Claim, Close, Equals
from ._solution import relative_deviation

# ---------------------------------------------------------------------------------------
# Measurements.


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
    options = dict(ts=ts, rtol=1e-10, atol=1e-10)
    euclidean = euclidean_flow(model, loss, t1, **options)
    intrinsic = intrinsic_flow(K, loss, model.lift(), t1, **options)
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


def _deep_expected(config):
    # Generic θ: φ has rank k(n_0 + n_L − k) (matrices of rank ≤ k = min width), and the
    # laws are the entries of the h_j (when no hidden layer is wider than its neighbours
    # together).
    w = config["widths"]
    D = sum(a * b for a, b in zip(w[:-1], w[1:]))
    k = min(w)
    laws = sum(n * (n + 1) // 2 for n in w[1:-1])
    return D, k * (w[0] + w[-1] - k), D - laws, laws, False


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
    return _deviation(model, lambda z: 0.5 * jnp.sum((z - target) ** 2), K, t1)


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
        jax.random.key(seed), n, degree=degree, lam=lam, adjoint="direct"
    )
    return _relative_gap(manifolds.intrinsic_metric(model), model)


def uv_mirror(d=3, delta=0.5, seed=0):
    model = models.DiagonalLinear.relaxed_balanced(jax.random.key(seed), (d,), 2, delta)
    K = manifolds.intrinsic_metric(model)
    return manifolds.mirror_flow_test(K, model.lift()).residual


# ---------------------------------------------------------------------------------------
# The registry: one entry per claim.

_LEVEL = "max over θ on the level set of |K(φ(θ)) − M(θ)| / |M(θ)|"
_FLOWS = "max_t |φ(θ(t)) − z(t)| / max|z|"
_KERNEL = "kernel-inclusion residual"


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


def _relu_expected(config):
    # THEORY §3: rank ∂Φ = D − #hidden, Lie(W) = W, one law per hidden neuron.
    config = {**EXAMPLES["relu"].defaults, **config}
    model = EXAMPLES["relu"].build_random({**config, "seed": 0})
    D = sum(int(np.size(x)) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    H = model.num_hidden
    return D, model.num_paths, H, D - H, D - H, H, True, True


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "UVᵀ has r(r+1)/2 laws (Lie algebra, SymPy)",
        section="§1",
        quantity="(Lie count, SymPy count)",
        measure=two_layer_law_counts,
        check=Equals(lambda c: (c["r"] * (c["r"] + 1) // 2,) * 2),
        configs=({"n": 3, "r": 2, "m": 4}, {"n": 2, "r": 3, "m": 3}, {"n": 4, "r": 3, "m": 5}),
    ),
    Claim(
        "deep linear: Σ n_j(n_j+1)/2 laws, not Frobenius",
        section="§1, §4",
        quantity="(D, rank ∂φ, dim Lie(W), laws, Frobenius)",
        measure=deep_law_counts,
        check=Equals(_deep_expected),
        configs=({"widths": (2, 2, 2)}, {"widths": (2, 3, 2)}, {"widths": (2, 4, 5, 2, 2)}),
    ),
    Claim(
        "u⊙v: Frobenius, recoverable",
        section="§2, §3",
        quantity="(laws, Frobenius, recoverable)",
        measure=diagonal_verdicts,
        check=Equals(lambda c: (math.prod(c["shape"]) * (c["depth"] - 1), True, True)),
        configs=({"shape": (3,), "depth": 2}, {"shape": (2,), "depth": 4}),
    ),
    Claim(
        "kernel bookkeeping, (n, m, r) = (3, 3, 2)",
        section="§4",
        quantity="(D, rank ∂φ, laws, dim ker ∂φ ∩ ker ∂h)",
        measure=kernel_bookkeeping,
        check=Equals((12, 8, 3, 1)),
        configs=({"n": 3, "r": 2, "m": 3},),
    ),
    Claim(
        "uv: (2, 1) gives z = 2, |δ| = 3, K = M = 5",
        section="§3",
        quantity="(z, |δ|, K, M)",
        measure=reference_uv,
        check=Close((2, 3, 5, 5), 1e-12),
        configs=({},),
    ),
    Claim(
        "diagonal chain: K = M on the level set",
        section="§3",
        quantity=_LEVEL,
        measure=diagonal_level_set,
        check=AtMost(1e-10),
        configs=(
            {"shape": (3,), "depth": 3, "lams": (0.5, -1.0)},
            {"shape": (4,), "depth": 2, "lams": 0.3},
        ),
    ),
    Claim(
        "uv: K⁻¹ is a Hessian (mirror flow)",
        section="§2 (beyond the paper)",
        quantity="symmetry residual of ∂(K⁻¹)",
        measure=uv_mirror,
        check=AtMost(1e-8),
        configs=({"d": 3, "delta": 0.5},),
    ),
    Claim(
        "two-layer reference: K[E_ij] = (7, 5, 5, 3) E_ij = M",
        section="§4",
        quantity="(K₁₁, K₁₂, K₂₁, K₂₂, off-diagonal, |K − M|)",
        measure=reference_two_layer,
        check=Close((7, 5, 5, 3, 0, 0), 1e-12),
        configs=({},),
    ),
    Claim(
        "two-layer, S = λI: K = M on the level set",
        section="§3",
        quantity=_LEVEL,
        measure=two_layer_level_set,
        check=AtMost(1e-10),
        configs=(
            {"n": 3, "r": 2, "m": 4, "lam": 0.5},
            {"n": 4, "r": 3, "m": 3, "lam": -0.5},
            {"n": 3, "r": 3, "m": 3, "lam": 0.0},
            {"n": 2, "r": 2, "m": 4, "lam": 0.7},
        ),
    ),
    Claim(
        "two-layer, S = λI: intrinsic flow = Euclidean flow",
        section="§3",
        quantity=_FLOWS,
        measure=example_flows,
        check=AtMost(1e-8),
        configs=(
            {"example": "two-layer-linear"},
            {"example": "two-layer-linear", "lam": -0.5, "n": 5},
            {"example": "two-layer-linear", "lam": 0.0, "n": 3, "r": 3, "m": 3},
        ),
    ),
    Claim(
        "two-layer, r ≤ max(n, m), S = λI: kernel inclusion holds",
        section="§3",
        quantity=_KERNEL,
        measure=kernel_residual_relaxed,
        check=AtMost(1e-10),
        configs=({"n": 3, "r": 2, "m": 4, "lam": 0.5}, {"n": 3, "r": 3, "m": 3, "lam": 0.0}),
    ),
    Claim(
        "two-layer, r ≤ max(n, m), generic S: kernel inclusion fails",
        section="§3",
        quantity=_KERNEL,
        measure=kernel_residual_random,
        check=AtLeast(1e-2),
        configs=(
            {"n": 3, "r": 2, "m": 4},
            {"n": 2, "r": 2, "m": 2},
            {"n": 3, "r": 3, "m": 3},
            {"n": 4, "r": 3, "m": 5},
        ),
    ),
    Claim(
        "two-layer, r > max(n, m) = 1, generic S: intrinsic",
        section="§3 (open case)",
        quantity=_FLOWS,
        measure=wide_flows,
        check=AtMost(1e-8),
        configs=({"r": 2}, {"r": 3, "seed": 1}),
    ),
    Claim(
        "deep linear, relaxed balanced: K = M on the level set",
        section="§3",
        quantity=_LEVEL,
        measure=deep_level_set,
        check=AtMost(1e-10),
        configs=(
            {"widths": (3, 3, 3, 3), "lams": (0.5, -0.3)},
            {"widths": (2, 4, 5, 2, 2), "lams": 0.0},
            {"widths": (3, 3, 3, 3, 3), "lams": (1.0, -2.0, 0.5)},
        ),
    ),
    Claim(
        "deep linear, relaxed balanced: intrinsic flow = Euclidean flow",
        section="§3",
        quantity=_FLOWS,
        measure=example_flows,
        check=AtMost(1e-8),
        configs=({"example": "deep-linear"}, {"example": "deep-linear", "lam": 0.0, "depth": 4}),
    ),
    Claim(
        "diagonal chain: intrinsic flow = Euclidean flow",
        section="§3",
        quantity=_FLOWS,
        measure=example_flows,
        check=AtMost(1e-8),
        configs=({"example": "diagonal"}, {"example": "diagonal", "depth": 3, "lam": -0.4}),
    ),
    Claim(
        "ReLU path-lifting: Frobenius, one law per hidden neuron, recoverable",
        section="§3, §4",
        quantity="(D, paths, hidden, rank ∂Φ, dim Lie(W), laws, Frobenius, recoverable)",
        measure=relu_verdicts,
        check=Equals(_relu_expected),
        configs=(
            {"widths": (2, 3, 2)},
            {"widths": (3, 4, 2), "bias": True},
            {"widths": (2, 3, 3, 1), "skip": ((0, 2),)},
            {"widths": (2, 3, 2, 2), "bias": True, "skip": ((0, 2), (1, 3))},
            {"widths": (2, 4, 3, 2), "bias": True},
            {"widths": (3, 2, 2, 2, 1), "skip": ((0, 3), (1, 4))},
        ),
    ),
    Claim(
        "ReLU: intrinsic flow = Euclidean flow across activation changes",
        section="§3",
        quantity=_FLOWS,
        measure=example_flows,
        check=AtMost(1e-7),
        configs=({"example": "relu", "seed": 2},),
    ),
    Claim(
        "linear neural ODE, H(s) = λ(s)I: log-mean K = M",
        section="§3",
        quantity="|K(φ(A)) − M(A)| / |M(A)|, A of Legendre degree p",
        measure=neural_ode_metric_gap,
        check=AtMost(1e-8),
        configs=(
            {"n": 3, "degree": 10, "lam": 0.5},
            {"n": 2, "degree": 10, "lam": -0.5},
            {"n": 4, "degree": 10, "lam": 1.0},
        ),
    ),
    Claim(
        "linear neural ODE: intrinsic flow = Euclidean (Galerkin) flow",
        section="§3",
        quantity=_FLOWS,
        measure=example_flows,
        check=AtMost(1e-8),
        configs=(
            {"example": "neural-ode"},
            {"example": "neural-ode", "n": 4, "lam": -0.3},
            {"example": "neural-ode", "n": 2, "lam": 1.0, "seed": 1},
        ),
    ),
)
