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


@pytest.mark.slow
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
        (["run", "--n", "0"], "--n: expected a positive integer (at most 64), got 0"),
        (["run", "--lam", "nan"], "--lam: expected a finite number"),
        (["run", "diagonal", "--r", "3"], "--r does not apply"),
        (["run", "--lam", "1", "--r", "5"], "r=5 > n=4"),
        (["run", "deep-linear", "--depth", "1"], "--depth: expected an integer in [2, 16], got 1"),
        (["run", "two-layer-linear", "--degree", "3"], "--degree does not apply"),
        (
            ["run", "neural-ode", "--degree", "-1"],
            "--degree: expected an integer in [0, 30], got -1",
        ),
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


@pytest.mark.slow
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


# Every numeric option of every command: non-numeric, negative, zero, NaN, infinite and huge
# values give one line naming the option, the value and what was expected (status 2), from
# the stdlib parser, before any work.
BAD_VALUES = [
    (
        ["run", "--n", "abc"],
        "argument --n: expected an integer, got 'abc' (allowed: a positive integer (at most 64))",
    ),
    (["run", "--n", "-3"], "argument --n: expected a positive integer (at most 64), got -3"),
    (
        ["run", "--n", "100000"],
        "argument --n: expected a positive integer (at most 64), got 100000",
    ),
    (["run", "--r", "0"], "argument --r: expected a positive integer (at most 64), got 0"),
    (
        ["run", "--m", "1e3"],
        "argument --m: expected an integer, got '1e3' (allowed: a positive integer (at most 64))",
    ),
    (
        ["run", "deep-linear", "--depth", "0"],
        "argument --depth: expected an integer in [2, 16], got 0",
    ),
    (
        ["run", "deep-linear", "--depth", "99"],
        "argument --depth: expected an integer in [2, 16], got 99",
    ),
    (
        ["run", "neural-ode", "--degree", "1000"],
        "argument --degree: expected an integer in [0, 30]",
    ),
    (["run", "--lam", "inf"], "argument --lam: expected a finite number in [-1000, 1000], got inf"),
    (
        ["run", "--lam", "1e300"],
        "argument --lam: expected a finite number in [-1000, 1000], got 1e300",
    ),
    (
        ["run", "--scale", "0"],
        "argument --scale: expected a positive finite number (at most 1000), got 0",
    ),
    (
        ["run", "--scale", "-1"],
        "argument --scale: expected a positive finite number (at most 1000)",
    ),
    (
        ["run", "--scale", "nan"],
        "argument --scale: expected a positive finite number (at most 1000)",
    ),
    (
        ["run", "--t1", "0"],
        "argument --t1: expected a positive finite number (at most 10000), got 0",
    ),
    (["run", "--t1", "1e9"], "argument --t1: expected a positive finite number (at most 10000)"),
    (
        ["run", "--t1", "x"],
        "argument --t1: expected a finite number, got 'x' (allowed: a positive finite number (at most 10000))",
    ),
    (["run", "--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295], got -1"),
    (["run", "--seed", "1" + "0" * 30], "argument --seed: expected an integer in [0, 4294967295]"),
    (
        ["run", "--seed", "1.5"],
        "argument --seed: expected an integer, got '1.5' (allowed: an integer in [0, 4294967295])",
    ),
    (["run", "--rtol", "0"], "argument --rtol: expected a finite number in (0, 1), got 0"),
    (["run", "--rtol", "2"], "argument --rtol: expected a finite number in (0, 1), got 2"),
    (["run", "--atol=-1e-8"], "argument --atol: expected a finite number in (0, 1), got -1e-8"),
    (["run", "--rtol", "1e-20"], "--rtol 1e-20 is below what float64 resolves"),
    (
        ["run", "--precision", "32", "--rtol", "1e-10"],
        "--rtol 1e-10 is below what float32 resolves",
    ),
    (["run", "--precision", "16"], "argument --precision: invalid choice: 16"),
    (
        ["run", "--max-steps", "0"],
        "argument --max-steps: expected a positive integer (at most 10000000), got 0",
    ),
    (
        ["run", "--max-steps", "1e12"],
        "argument --max-steps: expected an integer, got '1e12' (allowed: a positive integer",
    ),
    (["run", "--num-times", "1"], "argument --num-times: expected an integer in [2, 10000], got 1"),
    (["run", "--num-times", "10000000"], "argument --num-times: expected an integer in [2, 10000]"),
    (
        ["run", "relu", "--samples", "0"],
        "argument --samples: expected a positive integer (at most 10000), got 0",
    ),
    (["run", "relu", "--widths", "2,0,1"], "argument --widths: expected 3 to 8 positive widths"),
    (["run", "relu", "--widths", "2,1"], "argument --widths: expected 3 to 8 positive widths"),
    (["run", "relu", "--widths", "2,a,1"], "argument --widths: expected comma-separated widths"),
    (["run", "relu", "--widths", "50,50,50,50,50"], "up to 312500000 paths"),
    (["run", "relu", "--skip", "0:1"], "--skip 0:1: need 0 <= i and i + 1 < j <= 2"),
    (["run", "relu", "--skip", "x"], "argument --skip: expected I:J (layer indices), got 'x'"),
    (["run", "--out", "/proc/no/such/dir"], "--out '/proc/no/such/dir': cannot write there"),
    (
        ["sweep", "diagonal", "--param", "lam=0:1:2", "--chunks", "0"],
        "argument --chunks: expected a positive integer",
    ),
    (
        ["sweep", "diagonal", "--param", "lam=0:1:2", "--devices", "-2"],
        "argument --devices: expected a positive integer (at most 256), got -2",
    ),
    (
        ["sweep", "diagonal", "--param", "lam=0:1:2", "--devices", "100000"],
        "argument --devices: expected a positive integer (at most 256)",
    ),
    (["sweep", "diagonal", "--param", "lam=0:nan:2"], "need finite start, stop and num >= 1"),
    (["sweep", "diagonal", "--param", "lam=0:1:0"], "need finite start, stop and num >= 1"),
    (
        ["sweep", "diagonal", "--param", "lam=-1:1:100000000"],
        "num = 100000000 members, at most 10000",
    ),
    (
        ["sweep", "diagonal", "--param", "lam=-1e9:1:3"],
        "--param lam: every value must be a finite number in [-1000, 1000], got -1e+09",
    ),
    (
        ["sweep", "diagonal", "--param", "scale=-1:1:3"],
        "--param scale: every value must be a positive finite number",
    ),
    (
        ["sweep", "diagonal", "--param", "t1=0:1:3"],
        "--param t1: every value must be a positive finite number",
    ),
    (
        ["sweep", "diagonal", "--param", "seed=0:1:3"],
        "--param seed: every value must be an integer in [0, 4294967295], got 0.5",
    ),
    (["sweep", "diagonal", "--param", "seed=0:500:501"], "at most 200 members, got 501"),
    (
        ["sweep", "two-layer-linear", "--param", "n=4:5:2"],
        "--param n: n sets the shapes of the parameters",
    ),
    (["sweep", "deep-linear", "--param", "depth=2:3:2"], "--param depth: depth sets the shapes"),
    (["sweep", "neural-ode", "--param", "degree=2:4:3"], "--param degree: degree sets the shapes"),
    (["sweep", "relu", "--param", "samples=4:8:2"], "--param samples: samples sets the shapes"),
    (
        ["sweep", "relu", "--param", "lam=0:1:2"],
        "example 'relu' has no parameter 'lam'; it can sweep scale, seed, t1",
    ),
    (
        ["sweep", "relu", "--param", "seed=0:1:2", "--devices", "2"],
        "--devices: sweeping seed of 'relu' integrates one member after another",
    ),
    (
        ["sweep", "diagonal", "--param", "lam=0:1:2", "--out", "/proc/x"],
        "--out '/proc/x': cannot write there",
    ),
    (["analyze", "neural-ode", "--max-depth", "3"], "--max-depth 3: at most 2 for neural-ode"),
    (
        ["analyze", "neural-ode", "--degree", "30"],
        "has D = 279 parameters; analyze allows at most 200",
    ),
    (
        ["analyze", "--max-depth", "-1"],
        "argument --max-depth: expected an integer in [0, 32], got -1",
    ),
    (
        ["analyze", "--seed", "nan"],
        "argument --seed: expected an integer, got 'nan' (allowed: an integer in [0, 4294967295])",
    ),
    (["reproduce", "--out", "/proc/x"], "--out '/proc/x': cannot write there"),
]


@pytest.mark.parametrize(
    "args, message", BAD_VALUES, ids=lambda a: " ".join(a) if isinstance(a, list) else None
)
def test_bad_values_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path)] if args[0] in ("run", "sweep") else args
    # No work may start: building an example would mean the check came too late.
    import intrinsic._examples as examples

    monkeypatch.setattr(examples, "EXAMPLES", None)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith(f"intrinsic {args[0]}: error: ")


def test_report_json_is_strict():
    from intrinsic._report import json_ready, number

    obj = {"a": float("nan"), "b": [1.0, float("inf"), (2, -float("inf"))], "c": "x"}
    assert json_ready(obj) == {"a": None, "b": [1.0, None, [2, None]], "c": "x"}
    assert number(float("nan"), ".3e", 6) == "     —" and number(1.0, ".1f", 4) == " 1.0"


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _figure_axes(monkeypatch):
    # The figures of one call: each panel must have labelled axes.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    return figures


def test_failed_run_says_so_everywhere(tmp_path, capsys, monkeypatch):
    figures = _figure_axes(monkeypatch)
    out = tmp_path / "out"
    args = ["run", "--max-steps", "3", "--num-times", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "status: FAILED (euclidean flow: The maximum number of solver steps" in printed.out
    assert "—" in printed.out and "nan" not in printed.out.lower()
    report = _strict_json(out / "report.json")
    assert report["status"] == "failed" and set(report["failures"]) == {"euclidean", "intrinsic"}
    assert report["max_relative_deviation"] is None and report["euclidean_losses"][-1] is None
    (fig,) = figures
    assert "FAILED" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and len(ax.get_legend_handles_labels()[1]) != 1


@pytest.mark.parametrize("name", ["two-layer-linear", "neural-ode", "relu"])
def test_precision_32_is_the_same_problem(name):
    import jax
    import numpy as np

    from intrinsic._examples import EXAMPLES

    example = EXAMPLES[name]
    config = {**example.defaults, "seed": example.defaults.get("seed", 0)}
    m64, f64, _ = example.build(config, precision=64)
    m32, f32, _ = example.build(config, precision=32)
    for a, b in zip(jax.tree.leaves((m64, f64)), jax.tree.leaves((m32, f32)), strict=True):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            assert np.asarray(b).dtype == np.float32 and np.asarray(a).dtype == np.float64
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "precision, rtol, expected",
    [(64, None, 1e-10), (32, None, 1e-5), (32, 2e-6, 2e-6), (64, 1e-14, 1e-14)],
)
def test_tolerances_follow_the_precision(precision, rtol, expected):
    from types import SimpleNamespace

    from intrinsic._options import tolerances

    args = SimpleNamespace(precision=precision, rtol=rtol, atol=None)
    assert tolerances(args)[0] == expected


@pytest.mark.slow
def test_analyze_neural_ode_is_bounded(capsys):
    # Unbounded, the default took 23 minutes and 9 GB before dying: the levels are capped.
    assert main(["analyze", "neural-ode", "--n", "2", "--degree", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["lie_dimensions_per_level"]) <= 2
    assert "capped at 1" in report["note"]
    assert "polynomial_laws_degree_2" not in report
