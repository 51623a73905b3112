"""Registries driving the parametrised tests, and comparison helpers.

A new factorization is tested everywhere by adding one line to `all_factorizations`
(and to `intrinsic_configs` if it has a closed-form intrinsic metric).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import manifolds
import models

# name -> key -> model at a generic (random) point.
all_factorizations = {
    "diagonal-uv": lambda k: models.DiagonalLinear.random(k, (), 2),
    "diagonal-depth3": lambda k: models.DiagonalLinear.random(k, (3,), 3),
    "two-layer-3x2x4": lambda k: models.TwoLayerLinear.random(k, 3, 2, 4),
    "two-layer-2x5x3": lambda k: models.TwoLayerLinear.random(k, 2, 5, 3),
    "deep-2-3-4-2": lambda k: models.DeepLinear.random(k, (2, 3, 4, 2)),
    "deep-3-3-3-3": lambda k: models.DeepLinear.random(k, (3, 3, 3, 3)),
    "relu-2-3-2": lambda k: models.ReLUNetwork.random(k, (2, 3, 2)),
    "relu-bias-2-3-3-1": lambda k: models.ReLUNetwork.random(k, (2, 3, 3, 1), bias=True),
    "relu-dag-skip": lambda k: models.ReLUDAG.random(
        k, 2, 3, 1, [(0, 2), (1, 2), (0, 3), (2, 3), (1, 4), (2, 4), (3, 5), (4, 5), (0, 5)]
    ),
}

# name -> key -> model on a level set with a closed-form intrinsic metric.
# Every configuration of the foundation issue's acceptance table, plus the shapes that
# exercise the padding and projector branches.
intrinsic_configs = {
    "diagonal-depth2": lambda k: models.DiagonalLinear.relaxed_balanced(k, (3,), 2, 0.5),
    "diagonal-depth3": lambda k: models.DiagonalLinear.relaxed_balanced(k, (4,), 3, (0.5, -1.0)),
    "two-layer-2-2-4-pos": lambda k: models.TwoLayerLinear.relaxed_balanced(k, 2, 2, 4, 0.7),
    "two-layer-4-3-3-neg": lambda k: models.TwoLayerLinear.relaxed_balanced(k, 4, 3, 3, -0.5),
    "two-layer-3-2-5-pos": lambda k: models.TwoLayerLinear.relaxed_balanced(k, 3, 2, 5, 0.7),
    "two-layer-3-3-3-bal": lambda k: models.TwoLayerLinear.relaxed_balanced(k, 3, 3, 3, 0.0),
    "two-layer-5-2-3-neg": lambda k: models.TwoLayerLinear.relaxed_balanced(k, 5, 2, 3, -0.4),
    "two-layer-3-5-4-bal": lambda k: models.TwoLayerLinear.balanced(k, 3, 5, 4),
    "deep-square-L3": lambda k: models.DeepLinear.relaxed_balanced(k, (3, 3, 3, 3), (0.5, -0.3)),
    "deep-square-L4": lambda k: models.DeepLinear.relaxed_balanced(
        k, (3, 3, 3, 3, 3), (1.0, -2.0, 0.5)
    ),
    "deep-balanced-2-4-5-2-2": lambda k: models.DeepLinear.balanced(k, (2, 4, 5, 2, 2)),
}


def tree_allclose(x, y, *, rtol=1e-12, atol=1e-12) -> bool:
    return all(
        np.allclose(a, b, rtol=rtol, atol=atol)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
    )


def dense_jacobian(model) -> jnp.ndarray:
    """J = ∂φ(θ) as a d × D matrix, built with `jax.jacfwd` (an independent reference)."""
    phi, theta = manifolds.lifting_function(model)
    flat, unravel = ravel_pytree(theta)
    return jax.jacfwd(lambda t: ravel_pytree(phi(unravel(t)))[0])(flat)


def dense_laws_jacobian(model) -> jnp.ndarray:
    """∂h(θ) as an N × D matrix (jacfwd)."""
    h, theta = manifolds.laws_function(model)
    flat, unravel = ravel_pytree(theta)
    return jax.jacfwd(lambda t: ravel_pytree(h(unravel(t)))[0])(flat)


def quadratic_loss(key, z_struct):
    """A random convex quadratic loss f(z) = ½‖A vec(z) − b‖² with a nonzero gradient.

    `z_struct` may be a PyTree (vec(z) then concatenates its raveled leaves)."""
    d = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(z_struct))
    ka, kb = jax.random.split(key)
    a = jax.random.normal(ka, (d + 2, d)) / np.sqrt(d)
    b = jax.random.normal(kb, (d + 2,))

    def f(z, args=None):
        r = a @ jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(z)]) - b
        return 0.5 * jnp.sum(r**2)

    return f


class count_compilations:
    """Context manager counting XLA backend compilations (and tracing is implied by them
    for a cold cache): `with count_compilations() as c: ...; assert c.count == 0`."""

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)
        return False
