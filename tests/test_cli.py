import json
import os
import subprocess
import sys

import pytest

from flows._cli import main


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "flows._cli", *args], capture_output=True, text=True, timeout=300
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
