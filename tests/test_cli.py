import json
import os
import subprocess
import sys

import pytest

from intrinsic._cli import main


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "intrinsic", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args",
    [
        ("run",),
        ("run", "diagonal", "--depth", "3", "--lam", "-0.4", "--t1", "5"),
        ("run", "deep-linear", "--n", "2", "--depth", "3", "--t1", "3"),
    ],
)
def test_run_end_to_end(args, tmp_path):
    out = tmp_path / "out"
    proc = _run(*args, "--out", str(out), "--num-times", "5")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["max_relative_deviation"] <= 1e-8
    assert report["max_conservation_drift"] <= 1e-8
    assert len(report["ts"]) == 5
    assert report["euclidean_losses"][-1] < report["euclidean_losses"][0]
    png = (out / "flows.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "max relative deviation" in proc.stdout
    assert "rel. deviation" in proc.stdout


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("diagonal", "two-layer-linear (default)", "deep-linear"):
        assert name in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--bogus"], "unrecognized arguments"),
        (["run", "nonexistent"], "invalid choice"),
        (["run", "--t1", "-1"], "--t1: expected a positive finite number"),
        (["run", "--n", "0"], "--n: expected a positive integer, got 0"),
        (["run", "--lam", "nan"], "--lam: expected a finite number"),
        (["run", "diagonal", "--r", "3"], "--r does not apply"),
        (["run", "--lam", "1", "--r", "5"], "r=5 > n=4"),
        (["run", "deep-linear", "--depth", "1"], "at least 2"),
        (["run", "two-layer-linear", "--degree", "3"], "--degree does not apply"),
        (["run", "neural-ode", "--degree", "-1"], "`degree` must be a non-negative integer"),
        (["run", "neural-ode", "--degree", "2.5"], "--degree: expected an integer"),
        ([], "COMMAND"),
    ],
)
def test_bad_options_exit_2(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path)] if args and args[0] == "run" else args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_help_mentions_outputs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "report.json" in out and "--lam" in out and "--out" in out


def test_analyze_json_verdicts():
    relaxed = _run("analyze", "--json")
    assert relaxed.returncode == 0, relaxed.stderr
    report = json.loads(relaxed.stdout)
    n, r, m = 4, 3, 5  # the example's defaults
    assert report["num_parameters"] == (n + m) * r and report["lifted_dimension"] == n * m
    assert report["num_conservation_laws"] == r * (r + 1) // 2
    assert report["frobenius"] is False and report["recoverability"]["holds"] is False
    assert report["kernel_inclusion"]["holds"] is True
    assert report["kernel_inclusion"]["residual"] <= 1e-10
    assert len(report["polynomial_laws_degree_2"]) == r * (r + 1) // 2
    generic = json.loads(_run("analyze", "--init", "random", "--json", "--no-symbolic").stdout)
    assert generic["kernel_inclusion"]["holds"] is False
    assert generic["kernel_inclusion"]["residual"] > 1e-2
    assert "polynomial_laws_degree_2" not in generic


def test_analyze_user_factorization(tmp_path):
    (tmp_path / "my_arch.py").write_text(
        "import jax, jax.numpy as jnp\n"
        "import models\n\n"
        "class Chain(models.AbstractFactorization):\n"
        "    a: jax.Array\n"
        "    b: jax.Array\n\n"
        "    def lift(self):\n"
        "        return self.a * self.b\n\n"
        "    def conservation_laws(self):\n"
        "        return self.a**2 - self.b**2\n\n"
        "def build(key):\n"
        "    ka, kb = jax.random.split(key)\n"
        "    return Chain(jax.random.normal(ka, (3,)), jax.random.normal(kb, (3,)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "intrinsic", "analyze", "my_arch:build"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "number of conservation laws: 3" in proc.stdout
    assert "Frobenius (Lie(W) = W): yes" in proc.stdout
    assert "a_0**2 - b_0**2" in proc.stdout


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "built-in example or `module:attribute`"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("json:nothing_here", "has no attribute"),
        ("json:dumps", "must be a models.AbstractFactorization"),
    ],
)
def test_analyze_bad_spec_exit_2(spec, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", spec])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
