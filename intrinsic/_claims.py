"""The claims checked by `intrinsic reproduce`: the registry `CLAIMS` (measurements in `_claim_measures`).

One entry of `CLAIMS` per claim of the theory (THEORY.md §1–§4, the docs' theory primer): the
quantity that decides it, measured on each configuration, and how it is judged. An
architecture with claims of its own adds its entries here.
"""

import math

import equinox as eqx
import jax
import numpy as np

from ._claim_measures import (
    deep_law_counts,
    deep_level_set,
    diagonal_level_set,
    diagonal_verdicts,
    example_flows,
    kernel_bookkeeping,
    kernel_residual_random,
    kernel_residual_relaxed,
    neural_ode_metric_gap,
    reference_two_layer,
    reference_uv,
    relu_verdicts,
    two_layer_law_counts,
    two_layer_level_set,
    uv_mirror,
    wide_flows,
)
from ._examples import EXAMPLES
from ._reproduce import AtLeast, AtMost, Claim, Close, Equals


def _deep_expected(config):
    # Generic θ: φ has rank k(n_0 + n_L − k) (matrices of rank ≤ k = min width), and the
    # laws are the entries of the h_j (when no hidden layer is wider than its neighbours
    # together).
    w = config["widths"]
    D = sum(a * b for a, b in zip(w[:-1], w[1:]))
    k = min(w)
    laws = sum(n * (n + 1) // 2 for n in w[1:-1])
    return D, k * (w[0] + w[-1] - k), D - laws, laws, False


_LEVEL = "max over θ on the level set of |K(φ(θ)) − M(θ)| / |M(θ)|"


_FLOWS = "max_t |φ(θ(t)) − z(t)| / max|z|"


_KERNEL = "kernel-inclusion residual"


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
