"""`intrinsic run neural-ode`: the linear neural ODE example end to end."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_cli_run_neural_ode(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "intrinsic",
            "run",
            "neural-ode",
            "--degree",
            "11",
            "--out",
            str(out),
            "--num-times",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["degree"] == 11 and report["num_parameters"] == 12 * 9
    assert report["max_relative_deviation"] <= 1e-8
    assert report["euclidean_losses"][-1] < report["euclidean_losses"][0]
    # The drift of H(s) is the Galerkin truncation, and the output says so.
    assert "Galerkin" in proc.stdout and "Galerkin" in report["conservation_note"]
    assert report["status"] == "ok"
    assert (out / "flows.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
