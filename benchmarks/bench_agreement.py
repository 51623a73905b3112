"""Acceptance table: intrinsic flow versus Euclidean flow, rtol = atol = 1e-10.

For each configuration of the foundation issue, integrate θ' = −∇f(φ(θ)) and
z' = −K(z)∇f(z) from z₀ = φ(θ₀) on a regression loss up to t = 5, and report
max_t ‖φ(θ(t)) − z(t)‖ / max_t ‖z(t)‖ (goal ≤ 1e-8) and the conservation drift.

    python benchmarks/bench_agreement.py [--quick]
"""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import flows  # noqa: E402
import manifolds  # noqa: E402
import models  # noqa: E402

try:
    from benchmarks._common import Row, script_main, verdict
except ImportError:  # run as a script
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
    from benchmarks._common import Row, script_main, verdict

CONFIGS = {
    "DiagonalLinear depth 2, λ=0.5": lambda k: models.DiagonalLinear.relaxed_balanced(
        k, (4,), 2, 0.5
    ),
    "DiagonalLinear depth 3, λ=(0.5,−1)": lambda k: models.DiagonalLinear.relaxed_balanced(
        k, (4,), 3, (0.5, -1.0)
    ),
    "TwoLayerLinear (2,2,4), λ=0.7": lambda k: models.TwoLayerLinear.relaxed_balanced(
        k, 2, 2, 4, 0.7
    ),
    "TwoLayerLinear (4,3,3), λ=−0.5": lambda k: models.TwoLayerLinear.relaxed_balanced(
        k, 4, 3, 3, -0.5
    ),
    "TwoLayerLinear (3,2,5), λ=0.7": lambda k: models.TwoLayerLinear.relaxed_balanced(
        k, 3, 2, 5, 0.7
    ),
    "TwoLayerLinear (3,3,3), λ=0": lambda k: models.TwoLayerLinear.relaxed_balanced(
        k, 3, 3, 3, 0.0
    ),
    "DeepLinear square L=3, λ=(0.5,−0.3)": lambda k: models.DeepLinear.relaxed_balanced(
        k, (3, 3, 3, 3), (0.5, -0.3)
    ),
    "DeepLinear square L=4, λ=(1,−2,0.5)": lambda k: models.DeepLinear.relaxed_balanced(
        k, (3, 3, 3, 3, 3), (1.0, -2.0, 0.5)
    ),
}


def _regression(w, data):
    X, Y = data
    return 0.5 * jnp.mean((w @ X - Y) ** 2)


def _distance(w, target):
    return 0.5 * jnp.sum((w - target) ** 2)


def _loss(key, z):
    """The loss `f(z, args)` and its data `args`: regression for a matrix z, else a target."""
    if z.ndim == 2:
        kx, ky = jax.random.split(key)
        X = jax.random.normal(kx, (z.shape[1], 10))
        Y = jax.random.normal(ky, (z.shape[0], 10))
        return _regression, (X, Y)
    return _distance, jax.random.normal(key, z.shape)


def main(quick: bool = False) -> list[Row]:
    rows = []
    seeds = (0,) if quick else (0, 1, 2)
    ts = jnp.linspace(0.0, 5.0, 21)
    opts = dict(
        saveat=flows.SaveAt(ts=ts), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)
    )
    for name, build in CONFIGS.items():
        worst, drift, start = 0.0, 0.0, time.perf_counter()
        for seed in seeds:
            kmodel, kloss = jax.random.split(jax.random.key(seed))
            model = build(kmodel)
            f, data = _loss(kloss, model.lift())
            euc = flows.euclidean_flow(model, f, 0.0, 5.0, args=data, **opts)
            intr = flows.intrinsic_flow(
                manifolds.intrinsic_metric(model), f, 0.0, 5.0, model.lift(), args=data, **opts
            )
            worst = max(worst, float(jnp.max(flows.relative_deviation(euc, intr))))
            drift = max(drift, float(euc.conservation_drift))
        rows.append(
            Row(
                "4 agreement",
                f"{name}: max rel. deviation ({len(seeds)} seeds)",
                f"{worst:.1e}",
                "≤ 1e-8",
                verdict(worst <= 1e-8),
            )
        )
        rows.append(
            Row(
                "4 agreement",
                f"{name}: conservation drift; time",
                f"{drift:.1e}; {time.perf_counter() - start:.1f} s",
                "",
                "info",
            )
        )
    return rows


if __name__ == "__main__":
    script_main(__doc__, main)
