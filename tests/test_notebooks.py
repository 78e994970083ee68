"""Every notebook in notebooks/ runs top to bottom and is committed with its outputs.

The code cells are executed in one namespace (no kernel needed; ``python notebooks/build.py`` runs them in a
real Jupyter kernel and saves the outputs). Each notebook ends with assertions about its key claim, so a
silent regression fails here.
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_five_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", [p if p.stem.startswith(("01", "05")) else pytest.param(p, marks=pytest.mark.slow)
                                  for p in NOTEBOOKS], ids=[p.name for p in NOTEBOOKS])   # 02–04: 13 s, slow lane
def test_notebook_runs(path):
    import matplotlib

    matplotlib.use("Agg")        # the test's own choice: no window; the library never switches backends
    import matplotlib.pyplot as plt

    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    code = [c for c in cells if c["cell_type"] == "code"]
    try:
        for i, cell in enumerate(code):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            exec(compile(source, f"{path.name}[{i}]", "exec"), namespace)
    finally:
        plt.close("all")
    assert "assert " in "".join("".join(c["source"]) for c in code[-2:]), "the notebook must assert its claim"


@pytest.mark.parametrize("path", [p if p.stem.startswith(("01", "05")) else pytest.param(p, marks=pytest.mark.slow)
                                  for p in NOTEBOOKS], ids=[p.name for p in NOTEBOOKS])   # 02–04: 13 s, slow lane
def test_notebook_is_committed_with_outputs(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in cells), "run `python notebooks/build.py` and commit the outputs"
    assert sum(bool(c.get("outputs")) for c in cells) >= len(cells) // 2
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
