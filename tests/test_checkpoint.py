"""Checkpointed Euclidean flows: chunks written atomically, interrupted runs resume."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
import flows._checkpoint as checkpoint
import models


def _setup(key):
    kx, ky, km = jax.random.split(key, 3)
    X = jax.random.normal(kx, (3, 8))
    Y = jax.random.normal(ky, (2, 8))
    model = models.TwoLayerLinear.random(km, 2, 3, 3)
    return model, lambda z, args: 0.5 * jnp.mean((z @ X - Y) ** 2)


def test_resumable_flow_matches_one_solve_and_resumes(getkey, tmp_path, monkeypatch):
    model, f = _setup(getkey())
    ts = jnp.linspace(0.0, 4.0, 9)
    opts = dict(
        saveat=flows.SaveAt(ts=ts), stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)
    )
    whole = flows.euclidean_flow(model, f, 0.0, 4.0, **opts)
    path = str(tmp_path / "run.eqx")
    full = flows.resumable_euclidean_flow(model, f, 0.0, 4.0, path=path, num_chunks=4, **opts)
    assert full.successful
    np.testing.assert_allclose(full.final.lift(), whole.final.lift(), rtol=0, atol=1e-8)
    # Restarting the solver at each chunk changes only the step sequence.
    np.testing.assert_allclose(full.zs, whole.zs, rtol=0, atol=1e-8)
    np.testing.assert_allclose(full.conserved, whole.conserved, rtol=0, atol=1e-8)

    # Interrupt a fresh run during its third chunk...
    path2 = str(tmp_path / "interrupted.eqx")
    calls = []
    solve = checkpoint._solve_chunk

    def interrupting(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return solve(*args)

    monkeypatch.setattr(checkpoint, "_solve_chunk", interrupting)
    with pytest.raises(KeyboardInterrupt):
        flows.resumable_euclidean_flow(model, f, 0.0, 4.0, path=path2, num_chunks=4, **opts)
    monkeypatch.setattr(checkpoint, "_solve_chunk", solve)
    # ... then resume: only chunks 3 and 4 are solved, and the result is identical.
    resumed_from = []
    monkeypatch.setattr(
        checkpoint, "_solve_chunk", lambda *a: resumed_from.append(a[2]) or solve(*a)
    )
    resumed = flows.resumable_euclidean_flow(model, f, 0.0, 4.0, path=path2, num_chunks=4, **opts)
    assert [float(t) for t in resumed_from] == [2.0, 3.0]
    np.testing.assert_array_equal(resumed.zs, full.zs)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_of_another_run_is_refused(getkey, tmp_path):
    model, f = _setup(getkey())
    path = str(tmp_path / "run.eqx")
    flows.resumable_euclidean_flow(model, f, 0.0, 1.0, path=path, num_chunks=2)
    with pytest.raises(ValueError, match="other times or chunks"):
        flows.resumable_euclidean_flow(model, f, 0.0, 2.0, path=path, num_chunks=2)
    other = models.TwoLayerLinear.random(getkey(), 2, 2, 3)  # same z, other θ shapes
    with pytest.raises(ValueError, match="different run"):
        flows.resumable_euclidean_flow(other, f, 0.0, 1.0, path=path, num_chunks=2)
    with pytest.raises(ValueError, match="num_chunks"):
        flows.resumable_euclidean_flow(model, f, 0.0, 1.0, path=path, num_chunks=0)
