import pathlib
import re

import numpy as np
import pytest


@pytest.mark.slow
def test_readme_example_runs_and_agrees(capsys):
    readme = pathlib.Path(__file__).parents[1] / "README.md"
    (code,) = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    exec(compile(code, "README.md", "exec"), {})
    deviation, drift = (float(x) for x in capsys.readouterr().out.split())
    assert np.isfinite(deviation) and deviation <= 1e-8
    assert drift <= 1e-8
