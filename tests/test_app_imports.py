"""Imports go one way (intrinsic → flows → manifolds → models), and the command answers
`--help`, `list` and argument errors before JAX or the library is imported."""

import subprocess
import sys

import pytest

HEAVY = ("jax", "numpy", "equinox", "models", "manifolds", "flows", "intrinsic._examples")


def _python(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    "argv, status, expected",
    [
        (["--help"], 0, "usage: intrinsic"),
        (["list"], 0, "two-layer-linear (default)"),
        (["run", "--help"], 0, "--lam LAM"),
        (["run", "--lam", "abc"], 2, "argument --lam: expected a finite number, got 'abc'"),
        (["run", "no-such-example"], 2, "invalid choice: 'no-such-example'"),
        (["run", "diagonal", "--r", "3"], 2, "option --r does not apply to example 'diagonal'"),
        (["sweep", "diagonal"], 2, "the following arguments are required: --param"),
    ],
)
def test_command_answers_before_jax_is_imported(argv, status, expected):
    code = f"""
import contextlib, io, sys
import intrinsic._cli as cli
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        cli.main({argv!r})
        status = 0
    except SystemExit as e:
        status = e.code
print(status)
print(out.getvalue())
print("HEAVY", [m for m in {HEAVY!r} if m in sys.modules])
"""
    lines = _python(code).splitlines()
    assert int(lines[0]) == status
    assert expected in "\n".join(lines[1:])
    assert lines[-1] == "HEAVY []"


def test_python_m_intrinsic_help():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "intrinsic", "run", "--lam", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "expected a finite number" in proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "intrinsic._cli" in imported
    assert not imported & {"jax", "numpy", "models", "manifolds", "flows"}


def test_library_does_not_import_the_application():
    # argparse is imported by a dependency of the library (jaxtyping, through unittest), so
    # it is checked only when that dependency alone does not import it.
    deps = _python("import jaxtyping, sys; print('argparse' in sys.modules)").strip() == "True"
    found = _python(
        "import flows, manifolds, models, sys; "
        "print([m for m in ('matplotlib', 'tqdm', 'argparse', 'intrinsic') if m in sys.modules])"
    ).strip()
    expected = "['argparse']" if deps else "[]"
    assert found == expected
