"""Which public entry points pass which JAX transformations: a measured table.

    python -m benchmarks.transforms_table [SUBSTRING]   # only the rows whose name has it

Each entry point is written as a function of one float array (an init, a point z, λ or a
time) and run under `jax.jit`, `jax.vmap` (over a batch of 3), `jax.grad` (of a scalar
summary) and `jax.jacfwd`. A cell is ✔ when the transformed call returns finite numbers
equal (jit, vmap) to the eager call, else the exception's type and first line. Not a
benchmark (no timings): it prints the coverage table quoted in the project's notes.
"""

from __future__ import annotations

import sys

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np


def _entry_points():
    import flows
    import manifolds
    import models

    key = jax.random.key(0)
    two = models.TwoLayerLinear.relaxed_balanced(key, 3, 2, 4, 0.5)
    deep = models.DeepLinear.relaxed_balanced(key, (3, 3, 3, 3), (0.5, -0.3))
    diag = models.DiagonalLinear.relaxed_balanced(key, (3,), 3, (0.5, -1.0))
    relu = models.ReLUNetwork.random(key, (2, 3, 2), bias=True)
    node = models.LinearNeuralODE.relaxed_balanced(key, 2, degree=4, lam=0.3)
    target = jax.random.normal(jax.random.key(1), (3, 4))
    tight = dfx.PIDController(rtol=1e-8, atol=1e-8)

    def loss(z, y):
        return 0.5 * jnp.sum((z - y) ** 2)

    def scaled(model, s):
        return jax.tree.map(lambda x: s * x if eqx_inexact(x) else x, model)

    def eqx_inexact(x):
        return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)

    def mv(K, z):
        g = jax.tree.map(jnp.ones_like, z)
        return jax.tree.map(jnp.sum, K(z).mv(g))

    z_two = two.lift()
    relu_two = manifolds.TwoLayerReLUMetric(relu)
    relu_path = manifolds.ReLUPathMetric(relu)
    lam = jnp.asarray(0.5)
    one = jnp.asarray(1.0)
    return {
        "models.TwoLayerLinear(U, V).lift": (lambda s: scaled(two, s).lift(), one),
        "models.DeepLinear(weights).lift": (lambda s: scaled(deep, s).lift(), one),
        "models.DiagonalLinear(factors).lift": (lambda s: scaled(diag, s).lift(), one),
        "models.ReLUNetwork(...).lift": (lambda s: scaled(relu, s).lift(), one),
        "models.LinearNeuralODE(...).lift": (lambda s: scaled(node, s).lift(), one),
        "models.TwoLayerLinear.relaxed_balanced(lam)": (
            lambda lam_: models.TwoLayerLinear.relaxed_balanced(key, 3, 2, 4, lam_).lift(),
            lam,
        ),
        "models.DeepLinear.relaxed_balanced(lams)": (
            lambda lam_: models.DeepLinear.relaxed_balanced(key, (3, 3, 3), (lam_,)).lift(),
            lam,
        ),
        "models.DiagonalLinear.relaxed_balanced(lams)": (
            lambda lam_: models.DiagonalLinear.relaxed_balanced(key, (3,), 2, (lam_,)).lift(),
            lam,
        ),
        "manifolds.induced_metric(model).mv": (
            lambda s: mv(lambda z: manifolds.induced_metric(scaled(two, s)), z_two),
            one,
        ),
        "manifolds.intrinsic_metric(model)": (
            lambda s: mv(manifolds.intrinsic_metric(scaled(two, s)), scaled(two, s).lift()),
            one,
        ),
        "manifolds.TwoLayerLinearMetric(z).mv": (
            lambda s: mv(manifolds.TwoLayerLinearMetric(0.5, 2), s * z_two),
            one,
        ),
        "manifolds.DeepLinearMetric(z).mv": (
            lambda s: mv(manifolds.DeepLinearMetric(jnp.array([0.5, -0.3])), s * deep.lift()),
            one,
        ),
        "manifolds.DiagonalChainMetric(z).mv": (
            lambda s: mv(manifolds.DiagonalChainMetric(jnp.array([[0.5]])), s * diag.lift()),
            one,
        ),
        "manifolds.LogMeanMetric(z).mv": (
            lambda s: mv(manifolds.LogMeanMetric(), s * node.lift()),
            one,
        ),
        # The ReLU metrics are built from a concrete network (its activation pattern is
        # static: building one from a traced network is refused with a TypeError), then
        # called at a traced z.
        "manifolds.TwoLayerReLUMetric(z).mv": (
            lambda s: mv(relu_two, jax.tree.map(lambda x: s * x, relu.lift())),
            one,
        ),
        "manifolds.ReLUPathMetric(z).mv": (
            lambda s: mv(relu_path, jax.tree.map(lambda x: s * x, relu.lift())),
            one,
        ),
        "manifolds.RecoveredMetric(z).mv": (
            lambda s: mv(manifolds.RecoveredMetric(two), s * z_two),
            one,
        ),
        "flows.euclidean_flow (final loss)": (
            lambda s: flows.euclidean_flow(
                scaled(two, s), loss, 0.0, 1.0, args=target, stepsize_controller=tight
            ).losses[-1],
            one,
        ),
        "flows.euclidean_flow (adjoint=ForwardMode)": (
            lambda s: flows.euclidean_flow(
                scaled(two, s),
                loss,
                0.0,
                1.0,
                args=target,
                stepsize_controller=tight,
                adjoint=dfx.ForwardMode(),
            ).losses[-1],
            one,
        ),
        "flows.euclidean_flow (traced t1)": (
            lambda t1: flows.euclidean_flow(
                two, loss, 0.0, t1, args=target, stepsize_controller=tight
            ).losses[-1],
            one,
        ),
        "flows.intrinsic_flow (final loss)": (
            lambda s: flows.intrinsic_flow(
                manifolds.intrinsic_metric(two),
                loss,
                0.0,
                1.0,
                s * z_two,
                args=target,
                stepsize_controller=tight,
            ).losses[-1],
            one,
        ),
        "flows.intrinsic_flow (traced lam)": (
            lambda lam_: flows.intrinsic_flow(
                manifolds.TwoLayerLinearMetric(lam_, 2),
                loss,
                0.0,
                1.0,
                z_two,
                args=target,
                stepsize_controller=tight,
            ).losses[-1],
            lam,
        ),
    }


def _cell(fn, x, transform):
    try:
        if transform == "jit":
            out, ref = jax.jit(fn)(x), fn(x)
        elif transform == "vmap":
            xs = jnp.stack([x, 1.1 * x, 0.9 * x])
            out = jax.vmap(fn)(xs)
            ref = jax.tree.map(lambda *ys: jnp.stack(ys), *[fn(v) for v in xs])
        elif transform == "grad":
            total = lambda v: sum(jnp.sum(leaf) for leaf in jax.tree.leaves(fn(v)))  # noqa: E731
            out, ref = jax.grad(total)(x), None
        else:
            out, ref = jax.jacfwd(fn)(x), None
        leaves = jax.tree.leaves(out)
        if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves):
            return "✗ non-finite"
        if ref is not None:
            for a, b in zip(leaves, jax.tree.leaves(ref), strict=True):
                if not np.allclose(a, b, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(b)))):
                    return "✗ differs from eager"
        return "✔"
    except Exception as e:  # noqa: BLE001 - the table reports what happened
        line = (str(e).strip().splitlines() or [""])[0][:70]
        return f"✗ {type(e).__name__}: {line}"


def main(only: str = ""):
    jax.config.update("jax_enable_x64", True)
    rows = []
    for name, (fn, x) in _entry_points().items():
        if only not in name:
            continue
        cells = [_cell(fn, x, t) for t in ("jit", "vmap", "grad", "jacfwd")]
        rows.append((name, *cells))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return rows


if __name__ == "__main__":
    print("| entry point | jit | vmap | grad | jacfwd |\n|---|---|---|---|---|")
    main(sys.argv[1] if len(sys.argv) > 1 else "")
