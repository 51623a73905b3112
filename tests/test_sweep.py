"""`intrinsic sweep`: an ensemble over one parameter, checked member by member."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flows
from intrinsic._cli import main
from intrinsic._examples import EXAMPLES
from intrinsic._sweep import parse_param


def test_sweep_rows_match_single_flows(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    args = ["sweep", "two-layer-linear", "--param", "lam=-1:1:5", "--t1", "2", "--out", out]
    assert main([*args, "--no-progress", "--chunks", "2"]) == 0
    report = json.load(open(os.path.join(out, "sweep.json")))
    assert os.path.getsize(os.path.join(out, "sweep.png")) > 0
    rows = report["rows"]
    assert [r["lam"] for r in rows] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert all(r["succeeded"] for r in rows)
    example = EXAMPLES["two-layer-linear"]
    for r in rows[::2]:
        config = {**example.defaults, "seed": 0, "t1": 2.0, "lam": r["lam"]}
        model, f, _ = example.build(config)
        saveat = flows.SaveAt(ts=jnp.linspace(0, 2.0, 21))
        single = flows.euclidean_flow(model, f, 0.0, 2.0, saveat=saveat)
        np.testing.assert_allclose(r["final_loss"], float(single.losses[-1]), rtol=1e-9)
    # Not vacuous: λ changes where the flow ends.
    assert len({round(r["final_loss"], 8) for r in rows}) == len(rows)
    assert "final loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec, message",
    [("lam", "name=start:stop:num"), ("lam=0:1", "name=start:stop:num"), ("lam=a:1:3", "numbers")],
)
def test_bad_param_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_param(spec)


def test_sweep_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "two-layer-linear", "--param", "width=1:2:2", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "has no parameter 'width'" in capsys.readouterr().err


def test_sweep_on_simulated_devices(tmp_path):
    # A fresh process: the device count is fixed when the backend starts.
    out = str(tmp_path / "sharded")
    cmd = [sys.executable, "-m", "intrinsic", "sweep", "two-layer-linear"]
    cmd += ["--param", "lam=-0.5:0.5:3", "--t1", "1", "--devices", "2", "--out", out]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.load(open(os.path.join(out, "sweep.json")))
    assert report["devices"] == 2 and len(report["rows"]) == 3
    assert all(r["succeeded"] for r in report["rows"])


@pytest.mark.parametrize(
    "example_name, param",
    [
        (e, p)
        for e in sorted(EXAMPLES)
        for p in sorted(EXAMPLES[e].values)
        if e != "neural-ode" or p == "lam"  # one depth-solve case is enough
    ],
)
def test_sweep_members_built_by_vmap_match_eager(example_name, param):
    # `sweep` builds the members of a value parameter with one vmap; each must be the
    # model the example builds eagerly at that value.
    example = EXAMPLES[example_name]
    config = {**example.defaults, "seed": 0}
    values = np.array([0.8, 1.1]) * config[param] if config[param] else np.array([-0.2, 0.3])
    batch = eqx.filter_vmap(lambda v: example.build_model({**config, param: v}))(
        jnp.asarray(values)
    )
    for i, v in enumerate(values):
        eager = example.build_model({**config, param: float(v)})
        for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(eager), strict=True):
            assert np.linalg.norm(a[i] - b) <= 1e-12 * np.linalg.norm(b)


@pytest.mark.parametrize("param, spec", [("seed", "seed=0:1:2"), ("t1", "t1=0.5:1:2")])
def test_sweep_data_parameters_member_by_member(param, spec, tmp_path):
    # The seed draws the data and t1 ends the flow: each member has its own loss and time
    # span (before, every member used the first value's loss and the config's t1).
    out = str(tmp_path / "sweep")
    args = ["sweep", "two-layer-linear", "--param", spec, "--t1", "1", "--out", out]
    assert main([*args, "--no-progress"]) == 0
    report = json.load(open(os.path.join(out, "sweep.json")))
    assert report["mode"] == "loop" and report["status"] == "ok"
    example = EXAMPLES["two-layer-linear"]
    for r in report["rows"]:
        value = int(r[param]) if param == "seed" else r[param]
        config = {**example.defaults, "seed": 0, "t1": 1.0, param: value}
        model, f, _ = example.build(config)
        saveat = flows.SaveAt(ts=jnp.linspace(0, config["t1"], 21))
        single = flows.euclidean_flow(model, f, 0.0, config["t1"], saveat=saveat)
        np.testing.assert_allclose(r["final_loss"], float(single.losses[-1]), rtol=1e-9)
    assert len({round(r["final_loss"], 8) for r in report["rows"]}) == 2


def test_sweep_relu_members_one_by_one(tmp_path, capsys):
    # ReLU flows stop at activation events, which do not run under vmap; the scale also
    # sets the teacher.
    out = str(tmp_path / "relu")
    args = ["sweep", "relu", "--param", "scale=0.8:1.2:2", "--t1", "1", "--out", out]
    assert main([*args, "--no-progress"]) == 0
    report = json.load(open(os.path.join(out, "sweep.json")))
    assert report["mode"] == "loop" and all(r["succeeded"] for r in report["rows"])
    assert "one flow per member" in capsys.readouterr().out
