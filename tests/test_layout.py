"""The architecture as the README's Layout section states it: imports only point down, with no circle.

Every qasa module has a place in :data:`ORDER` (lowest first). Every import of a qasa module must
name a module below the importer: those at module level and the deferred ones inside functions (they
run only when the function is called, but they are dependencies all the same). Imports under
``if TYPE_CHECKING:`` are annotations only and never run, so they are not arrows.

:data:`ALLOWED_UP` may list at most two deferred imports that point up, each a Jupyter convenience
with its reason; an allowance that no longer occurs, or that does not point up, fails the suite
(:func:`test_every_allowance_is_still_needed`). It is empty today: the plotting methods of
``Dataset``/``FitTable`` import :mod:`qasa.plots`, which sits low (it draws what it is given), and
``Dataset.load/save`` reach :class:`qasa.store.DatasetStore` through the class that ``qasa/__init__``
registers in :mod:`qasa.dataset`, not through an import.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qasa"

#: Lowest first: data flows protocol → sampler → store → fit → device analysis → report/CLI.
ORDER = [
    "errors", "redact", "parameters", "models", "reduce", "display", "schedules",
    "protocol", "topology", "plots", "dataset", "cost",
    "virtual.physics", "virtual.noise", "virtual.estimand", "virtual.qpu", "virtual",
    "leap", "backend", "samplers", "fitting", "store", "session", "runner",
    "design", "device", "temperature", "drift", "analogues", "analysis", "report",
    "adaptive", "shim", "pipeline", "cli", "__init__",
]

#: Deferred imports that point up (importer, imported) → why. At most two, Jupyter conveniences only.
ALLOWED_UP: dict[tuple[str, str], str] = {}

#: Longest function or method in qasa/ (issue 22): lines from its ``def`` to its last line, docstring
#: included (``end_lineno − lineno + 1``); a longer one is split into named steps.
MAX_FUNCTION_LINES = 100
#: Functions allowed over the limit (none today). An entry that is no longer over the limit fails the
#: suite (:func:`test_no_function_is_longer_than_the_limit`).
LONG_ALLOWED: set[str] = set()


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    name = ".".join(rel.parts)
    return "__init__" if name == "__init__" else name.removesuffix(".__init__")


def _target(module: str | None, names: list[ast.alias], level: int = 0, importer: str = "",
            is_package: bool = False) -> list[str]:
    """The qasa modules one ``from ... import ...`` names (relative imports resolved against ``importer``)."""
    if level:
        parts = [] if importer == "__init__" else importer.split(".")
        package = parts[:len(parts) - level + is_package]
        module = ".".join(["qasa", *package, *([module] if module else [])])
    if module is None or not (module == "qasa" or module.startswith("qasa.")):
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


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) bodies."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports(source: str, me: str, is_package: bool = False) -> tuple[set[str], set[str]]:
    """(module-level, deferred) qasa modules that the source of module ``me`` (a package's
    ``__init__`` when ``is_package``) imports."""
    tree = ast.parse(source)
    skip = _type_checking_only(tree)
    top, deferred = set(), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            targets = _target(node.module, node.names, node.level, me, is_package)
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("qasa.") if a.name != "qasa" else "__init__"
                       for a in node.names if a.name == "qasa" or a.name.startswith("qasa.")]
        (top if node in tree.body else deferred).update(t for t in targets if t != me)
    return top, deferred


MODULES = sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, dict[str, str]]:
    """importer → {imported: "module-level" | "deferred"} over the whole package."""
    g: dict[str, dict[str, str]] = {}
    for path in MODULES:
        me = _name(path)
        top, deferred = imports(path.read_text(), me, path.name == "__init__.py")
        g[me] = {dep: "deferred" for dep in deferred} | {dep: "module-level" for dep in top}
    return g


def arrows_up(g: dict[str, dict[str, str]], order: list[str]) -> list[tuple[str, str, str]]:
    """(importer, imported, kind) for every import that names a module at or above the importer."""
    return sorted((me, dep, kind) for me, deps in g.items() for dep, kind in deps.items()
                  if dep in order and me in order and order.index(dep) >= order.index(me))


def stale(allowed: dict[tuple[str, str], str], g: dict[str, dict[str, str]], order: list[str]) -> list[str]:
    """Allowances that no longer occur as a deferred import, or that do not point up."""
    out = []
    for me, dep in allowed:
        if g.get(me, {}).get(dep) != "deferred":
            out.append(f"{me} → {dep}: no such deferred import any more")
        elif order.index(dep) < order.index(me):
            out.append(f"{me} → {dep}: points down, needs no allowance")
    return out


def circles(g: dict[str, dict[str, str]]) -> list[str]:
    """One circle of the import graph (module-level and deferred arrows), or nothing."""
    try:
        tuple(graphlib.TopologicalSorter({me: set(deps) for me, deps in g.items()}).static_order())
    except graphlib.CycleError as e:
        return list(e.args[1])
    return []


def long_functions(source: str, me: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``module.qualified.name`` → lines of every function or method of ``source`` longer than ``limit``."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and lines > limit:
                    out[name] = lines
                visit(child, name)
            else:
                visit(child, prefix)

    visit(ast.parse(source), me)
    return out


def test_no_function_is_longer_than_the_limit():
    found = {name: n for path in MODULES for name, n in long_functions(path.read_text(), _name(path)).items()}
    over = {name: n for name, n in found.items() if name not in LONG_ALLOWED}
    assert not over, ("functions over %d lines (split them into named steps): " % MAX_FUNCTION_LINES
                      + ", ".join(f"{name} ({n})" for name, n in sorted(over.items(), key=lambda kv: -kv[1])))
    stale = sorted(LONG_ALLOWED - set(found))
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines: remove {stale} from LONG_ALLOWED"


def test_the_length_check_sees_what_it_must():
    """Made-up source: functions and methods at any depth are measured from ``def`` to their last line."""
    def fn(name: str, lines: int, indent: int) -> str:
        pad = " " * indent
        return f"{pad}def {name}():\n" + "".join(f"{pad}    x{i} = {i}\n" for i in range(lines - 1))

    src = (fn("short", 100, 0) + "class A:\n" + fn("long", 101, 4) + "    def outer(self):\n" + fn("inner", 100, 8)
           + "        return inner\n")
    assert long_functions(src, "m") == {"m.A.long": 101, "m.A.outer": 102}
    assert long_functions(src, "m", limit=99) == {"m.short": 100, "m.A.long": 101, "m.A.outer": 102,
                                                   "m.A.outer.inner": 100}


def test_every_module_has_a_place_in_the_layout():
    missing = [_name(p) for p in MODULES if _name(p) not in ORDER]
    assert not missing, f"add {missing} to ORDER (and to the README's Layout section)"
    assert len(ORDER) == len(set(ORDER))


@pytest.mark.parametrize("path", MODULES, ids=[_name(p) for p in MODULES])
def test_imports_point_down(path):
    me = _name(path)
    top, deferred = imports(path.read_text(), me, path.name == "__init__.py")
    rank = ORDER.index(me)
    for dep in top:
        if dep in ORDER:
            assert ORDER.index(dep) < rank, f"{me} imports {dep} at module level, which is above it"
    for dep in deferred - top:
        if dep in ORDER and ORDER.index(dep) > rank:
            assert (me, dep) in ALLOWED_UP, f"{me} imports {dep} (deferred), which is above it"


def test_no_circle_and_no_arrow_up_beyond_the_allowances():
    g = graph()
    assert circles(g) == []
    assert [(me, dep) for me, dep, _ in arrows_up(g, ORDER)] == sorted(ALLOWED_UP)
    assert len(ALLOWED_UP) <= 2


def test_every_allowance_is_still_needed():
    assert stale(ALLOWED_UP, graph(), ORDER) == []


def test_the_checks_see_what_they_must():
    """The checker on made-up sources: a deferred import counts, a TYPE_CHECKING one does not,
    relative imports resolve, a stale or downward allowance is reported and a circle is found."""
    src = ("from typing import TYPE_CHECKING\nfrom qasa.errors import QasaError\n"
           "if TYPE_CHECKING:\n    from qasa.store import DatasetStore\n"
           "def f():\n    from qasa.fitting import fit\n    import qasa.virtual.qpu\n    from . import models\n"
           "    from .virtual import physics\n    import qasa\n")
    top, deferred = imports(src, "dataset")
    assert top == {"errors"}
    assert deferred == {"fitting", "virtual.qpu", "models", "virtual.physics", "__init__"}
    assert imports("from .physics import x\nfrom .. import errors\n", "virtual.qpu")[0] == {"virtual.physics", "errors"}
    assert imports("from .qpu import x\nfrom . import physics\n", "virtual", is_package=True)[0] == {"virtual.qpu",
                                                                                                    "virtual.physics"}
    assert imports("from .dataset import x\n", "__init__", is_package=True)[0] == {"dataset"}
    order = ["a", "b", "c"]
    g = {"a": {"c": "deferred"}, "b": {"a": "module-level"}, "c": {"b": "module-level"}}
    assert arrows_up(g, order) == [("a", "c", "deferred")]
    assert set(circles(g)) == {"a", "b", "c"}
    assert circles({"a": {}, "b": {"a": "module-level"}}) == []
    assert stale({("a", "c"): "ok", ("b", "a"): "down", ("a", "b"): "gone"}, g, order) == [
        "b → a: no such deferred import any more", "a → b: no such deferred import any more"]
    g["b"]["a"] = "deferred"
    assert stale({("b", "a"): "down"}, g, order) == ["b → a: points down, needs no allowance"]


@pytest.mark.parametrize("old, new, names", [
    ("qasa.analysis", "qasa.parameters", ["ParameterInfo", "PARAMETERS", "parameter_info", "round_to_uncertainty",
                                          "format_value"]),
    ("qasa.analysis", "qasa.topology", ["layout_table"]),
    ("qasa.samplers", "qasa.protocol", ["filter_parameters"]),
])
def test_names_moved_down_are_still_importable_where_users_import_them(old, new, names):
    import importlib

    before, after = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(before, name) is getattr(after, name) and name in before.__all__ and name in after.__all__


def test_dataset_load_and_save_go_through_the_registered_store(tmp_path, monkeypatch):
    """qasa.dataset does not import the store above it: qasa/__init__ registers DatasetStore there,
    and Dataset.save/load use whatever class is registered."""
    import qasa
    from qasa import dataset

    assert dataset._STORE is qasa.DatasetStore
    seen = []

    class Spy(qasa.DatasetStore):
        def __init__(self, path):
            seen.append(path)
            super().__init__(path)

    monkeypatch.setattr(dataset, "_STORE", Spy)
    data = qasa.run(qasa.Protocol.grid(0.5, 0.5, reads_per_h=20, reads_per_call=10, seed=1),
                    qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1, 1, 4]))
    data.save(tmp_path / "d")
    assert qasa.Dataset.load(tmp_path / "d").equals(data) and seen == [tmp_path / "d"] * 2
