"""The documentation: API pages cover every export, and every code example runs."""

import collections
import importlib
import pathlib
import re
import runpy
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::(\w+))?"$', flags=re.M)


def _pages():
    return {p: p.read_text() for p in DOCS.rglob("*.md")}


@pytest.mark.parametrize("package", ["models", "manifolds", "flows"])
def test_api_pages_document_every_export(package):
    module = importlib.import_module(package)
    exported = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # The API pages are by topic, not by package: each export is on exactly one of them.
    entries = collections.Counter(
        name
        for page in sorted((DOCS / "api").glob("*.md"))
        for name in re.findall(rf"^::: {package}\.(\w+)\s*$", page.read_text(), flags=re.M)
    )
    missing = sorted(exported - set(entries))
    assert not missing, (
        f"exported from `{package}` but not on an API page: {missing}. Add a line "
        f"`::: {package}.NAME` for each to the topic page in docs/api/ where it belongs."
    )
    assert not set(entries) - exported, f"API pages name non-exports: {set(entries) - exported}"
    repeated = sorted(name for name, count in entries.items() if count > 1)
    assert not repeated, f"on more than one API page, or twice on one: {repeated}"


@pytest.mark.slow
def test_getting_started_example_runs(capsys):
    page = (DOCS / "index.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    exec(compile(code, "docs/index.md", "exec"), {})
    gap, deviation, drift = (float(x) for x in capsys.readouterr().out.split())
    assert gap <= 1e-12 and deviation <= 1e-8 and drift <= 1e-8


@pytest.mark.slow
def test_scaling_page_examples_run(capsys, tmp_path, monkeypatch):
    # The ensemble and sharding examples (the cluster recipe needs several hosts and the
    # checkpoint example a long run; their functions are tested in test_ensemble.py and
    # test_checkpoint.py).
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "scaling.md").read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for code in blocks[:2]:
        exec(compile(code, "docs/scaling.md", "exec"), namespace)
    assert capsys.readouterr().out.strip() == "(101, 2, 2, 2) True"
    assert namespace["euc"].successful and namespace["intr"].successful
    assert namespace["euc"].zs.shape[0] == 101


def test_snippets_resolve_and_every_tutorial_is_shown():
    included = set()
    for page, text in _pages().items():
        for path, section in SNIPPET.findall(text):
            source = ROOT / path
            assert source.is_file(), f"{page}: snippet {path} does not exist"
            if section:
                body = source.read_text()
                for mark in ("start", "end"):
                    assert f"# --8<-- [{mark}:{section}]" in body, f"{page}: {path}:{section}"
            included.add(source)
        for image in re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text):
            assert (page.parent / image).resolve().is_file(), f"{page}: missing {image}"
    assert set(TUTORIALS) <= included, f"never shown: {set(TUTORIALS) - included}"


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(script, tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(script.parent))  # as `python docs/tutorials/x.py` does
    before = set(sys.modules)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:  # the tutorials' own modules (attention_head) are not left behind
        for name in set(sys.modules) - before:
            if str(script.parent) in str(getattr(sys.modules[name], "__file__", "")):
                del sys.modules[name]
    # A tutorial that draws a figure shows it on its page: docs/figures/NAME.png.
    for figure in re.findall(r'out / "(\w+\.png)"', script.read_text()):
        png = (tmp_path / figure).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        assert (DOCS / "figures" / figure).is_file(), f"{figure} is not in docs/figures"
