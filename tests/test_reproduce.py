import json

import pytest

from intrinsic._cli import main
from intrinsic._reproduce import AtLeast, AtMost, Claim, Close, Equals, evaluate, reproduce


@pytest.mark.slow
def test_reproduce_quick_passes(tmp_path, capsys):
    # The one end-to-end run: every claim's first configuration, through the command.
    from intrinsic._claims import CLAIMS

    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "claim" in out and "tolerance" in out and "verdict" in out
    report = json.loads((tmp_path / "claims.json").read_text())
    assert report["quick"] and report["failed"] == 0
    assert [row["claim"] for row in report["claims"]] == [c.name for c in CLAIMS]
    assert all(row["verdict"] == "pass" for row in report["claims"])
    png = (tmp_path / "claims.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_checks():
    assert AtMost(1e-8)(1e-9, {}) and not AtMost(1e-8)(float("nan"), {})
    assert AtLeast(0.1)(0.5, {}) and not AtLeast(0.1)(0.01, {})
    assert Equals(lambda c: (c["r"], True))((3, True), {"r": 3})
    assert Equals((1, 2)).describe({}) == "= (1, 2)"
    assert Close((7, 5), 1e-12)((7.0, 5.0 + 1e-13), {}) and not Close((7,), 1e-12)((7.1,), {})


def test_failures_are_reported(tmp_path, capsys):
    def boom(**config):
        raise RuntimeError("no")

    claims = (
        Claim("holds", "§0", "x", lambda x: x, AtMost(1.0), ({"x": 0.5}, {"x": 2.0})),
        Claim("raises", "§0", "x", boom, AtMost(1.0), ({},)),
    )
    rows = evaluate(claims, quick=False)
    assert [r["verdict"] for r in rows] == ["pass", "FAIL", "ERROR"]
    assert [r["verdict"] for r in evaluate(claims, quick=True)] == ["pass", "ERROR"]
    assert reproduce(True, str(tmp_path), claims=claims) == 1
    assert "RuntimeError: no" in capsys.readouterr().err
    assert json.loads((tmp_path / "claims.json").read_text())["failed"] == 1
