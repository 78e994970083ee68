"""The architecture as the README's Layout section states it: imports only point down.

Every qasa module has a place in :data:`ORDER` (lowest first). A module-level import must name a
module below the importer. An import inside a function (deferred: it runs only when that function
is called) may point up only where :data:`DEFERRED_UP` lists the pair, each with its reason: the
presentation methods objects offer in Jupyter, the sampler factory, and the convenience load/save of
a Dataset through its store.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qasa"

#: Lowest first: data flows protocol → sampler → store → fit → device analysis → report/CLI.
ORDER = [
    "errors", "redact", "models", "reduce", "display", "schedules",
    "protocol", "topology", "dataset", "cost",
    "virtual.physics", "virtual.estimand", "virtual.qpu", "virtual", "emulator",
    "samplers", "leap", "store", "runner",
    "fitting", "design", "plots", "device", "temperature", "drift", "analogues", "analysis", "report",
    "adaptive", "pipeline", "cli", "__init__",
]

#: Deferred imports that point up, and why they are allowed.
DEFERRED_UP = {
    ("dataset", "store"): "Dataset.load/save: convenience that goes through the store, the directory's owner",
    ("dataset", "plots"): "Dataset.plot_response: plotting method for Jupyter",
    ("dataset", "display"): "Jupyter repr",
    ("fitting", "plots"): "FitTable.plot_map/plot_histogram: plotting methods for Jupyter",
    ("fitting", "analysis"): "parameter labels for the plotting methods",
    ("fitting", "display"): "Jupyter repr",
    ("display", "analysis"): "number formatting shared with the report",
    ("store", "fitting"): "the fit cache reads FitTable files",
    ("samplers", "virtual"): "get_sampler('emulator') builds the virtual QPU",
    ("samplers", "leap"): "get_sampler('qpu') opens the solver with Leap's retries",
    ("analogues", "fitting"): "the QPU/SA analogue studies fit what they measure",
    ("analogues", "samplers"): "the SA analogue study samples",
    ("analogues", "virtual"): "the QPU analogue study runs on the virtual QPU",
    ("analogues", "__init__"): "the analogue studies run qasa.run",
    ("virtual.qpu", "display"): "Jupyter repr",
    ("protocol", "display"): "Jupyter repr",
}


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    name = ".".join(rel.parts)
    return "__init__" if name == "__init__" else name.removesuffix(".__init__")


def _target(module: str | None, names: list[ast.alias]) -> list[str]:
    if module is None or not module.startswith("qasa"):
        return []
    base = "" if module == "qasa" else module.removeprefix("qasa.")
    folder = PACKAGE.joinpath(*base.split(".")) if base else PACKAGE
    out = []
    for a in names:   # from qasa[.pkg] import x: the submodule x if there is one, else the module itself
        if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir():
            out.append(f"{base}.{a.name}" if base else a.name)
        else:
            out.append(base or "__init__")
    return out


def _imports(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    top, deferred = set(), set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            targets = _target(node.module, node.names)
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("qasa.") if a.name != "qasa" else "__init__"
                       for a in node.names if a.name.startswith("qasa")]
        (top if node in tree.body else deferred).update(targets)
    return top, deferred


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_place_in_the_layout():
    missing = [_name(p) for p in MODULES if _name(p) not in ORDER]
    assert not missing, f"add {missing} to ORDER (and to the README's Layout section)"


@pytest.mark.parametrize("path", MODULES, ids=[_name(p) for p in MODULES])
def test_imports_point_down(path):
    me = _name(path)
    top, deferred = _imports(path)
    rank = ORDER.index(me)
    for dep in top:
        if dep in ORDER:
            assert ORDER.index(dep) < rank, f"{me} imports {dep} at module level, which is above it"
    for dep in deferred:
        if dep in ORDER and ORDER.index(dep) > rank:
            assert (me, dep) in DEFERRED_UP, f"{me} imports {dep} (deferred), which is above it"
