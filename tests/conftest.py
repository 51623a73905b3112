import os
import random

import jax
import pytest

# Tests run in float64 with strict promotion; the library itself never sets these.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey(request):
    """A fresh PRNG key per call, from a seed printed on failure so it can be replayed
    (`GETKEY_SEED=<seed> pytest ...`)."""
    seed = int(os.environ.get("GETKEY_SEED", random.randint(0, 2**31 - 1)))
    request.node.user_properties.append(("seed", seed))
    print(f"getkey seed: {seed}")
    key = jax.random.key(seed)

    def _getkey():
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return _getkey


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop JAX's compiled executables after each test module.

    One pytest process compiles thousands of programs; keeping them all made XLA abort
    while compiling late in the suite (observed twice in a full run on 2 cores).
    """
    yield
    jax.clear_caches()
