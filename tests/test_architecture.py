"""The package's architecture, checked from its source: layers only point down.

Every module under ``robosteer/`` is parsed with ``ast``; every import statement, at module
level or inside a function, becomes an edge to the robosteer module it names (relative
imports resolved). The strings of a package ``__init__``'s lazy-export table are not
imports, so they are not edges. On that graph:

- there are no import cycles;
- each module imports only its own floor and the floors below (``FLOORS``); the simulator
  imports only the core and the data formats, and does not even name the model, training,
  circuits or application packages in a string; the circuits (apart from their command
  line) never import the simulator or the application;
- no file is longer than ``MAX_LINES``;
- ``robosteer --help`` imports neither torch nor numpy (nor tqdm, robosuite, transformers).

Usage::

    .venv/bin/python -m pytest -q tests/test_architecture.py
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robosteer"
MAX_LINES = 500

# Floors, lowest first: a module may import its own floor and those below. Keys are module
# names or package prefixes; the longest matching key decides.
FLOORS: dict[str, int] = {
    "robosteer": 1,  # the package __init__ (sites, lazy) and the core modules below; an unlisted top-level module too
    "robosteer.lazy": 1, "robosteer.files": 1, "robosteer.intervals": 1, "robosteer.sites": 1,
    "robosteer.config_cli": 1,
    "robosteer.data": 2,
    "robosteer.models": 3, "robosteer.hooks": 3, "robosteer.cache": 3, "robosteer.interventions": 3,
    "robosteer.masks": 3, "robosteer.explanation": 3,
    "robosteer.circuits": 4, "robosteer.train": 4, "robosteer.viz": 4, "robosteer.interop": 4,
    "robosteer.sim": 5,
    "robosteer.app": 6,
    "robosteer.circuits.cli": 7,  # the discover command builds the application's sim probes
    "robosteer.cli": 7,
}
# The simulator sits above the model floors but may use only the core, the data formats and itself
# (it runs any policy callable it is given).
SIM_FLOORS = (1, 2, 5)
SIM_MUST_NOT_NAME = ("robosteer.models", "robosteer.train", "robosteer.circuits", "robosteer.app", "robosteer.policy")
HEAVY = ("torch", "numpy", "tqdm", "robosuite", "transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _sources()


def _resolve(name: str) -> str | None:
    """The deepest robosteer module ``name`` refers to (``robosteer.models.load_vla`` -> ``robosteer.models``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str, tree: ast.AST) -> list[tuple[str, int]]:
    """(imported robosteer module, line) for every import statement anywhere in ``tree``."""
    is_package = MODULES[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one, else a name of ``pkg``
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "robosteer" else None
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


def _trees() -> dict[str, ast.AST]:
    return {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}


TREES = _trees()
EDGES: dict[str, list[tuple[str, int]]] = {m: _imports(m, t) for m, t in TREES.items()}


def _floor(module: str) -> int:
    key = max((k for k in FLOORS if module == k or module.startswith(k + ".")), key=len)
    return FLOORS[key]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, c) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def _where(module: str, target: str) -> str:
    lines = sorted({line for t, line in EDGES[module] if t == target})
    return f"{MODULES[module].relative_to(ROOT)}:{','.join(map(str, lines))}"


def test_the_graph_sees_imports_at_every_level_and_resolves_relative_ones():
    """The checks below are only as good as the graph: a function-level relative import is an edge."""
    tree = ast.parse("from .tasks import Task\n"
                     "def f():\n    from ..data.frames import Frame\n    import robosteer.files\n")
    assert {t for t, _ in _imports("robosteer.sim.cli", tree)} == {
        "robosteer.sim.tasks", "robosteer.data.frames", "robosteer.files"}
    lazy = ast.parse('_EXPORTS = {"Task": "robosteer.sim.tasks"}\n')
    assert _imports("robosteer.sim", lazy) == []  # lazy-export strings are not imports
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    graph = {m: {t for t, _ in edges} for m, edges in EDGES.items()}
    cycles = _cycles(graph)
    described = [" -> ".join(c) + "  (" + "; ".join(_where(a, b) for a, b in zip(c, c[1:])) + ")" for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_modules_import_only_their_floor_and_below():
    wrong = [f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)}) at {_where(m, t)}"
             for m, edges in EDGES.items() for t in sorted({t for t, _ in edges}) if _floor(t) > _floor(m)]
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_circuits_need_neither_the_simulator_nor_the_application():
    wrong = [f"{m} imports {t} at {_where(m, t)}" for m, edges in EDGES.items()
             if m.startswith("robosteer.circuits") and m != "robosteer.circuits.cli"
             for t in sorted({t for t, _ in edges}) if t.startswith(("robosteer.sim", "robosteer.app"))]
    assert not wrong, "\n".join(wrong)


def test_the_simulator_imports_only_core_and_data_and_names_no_policy_module():
    def allowed(t: str) -> bool:
        return _floor(t) in SIM_FLOORS

    sim = [m for m in MODULES if m == "robosteer.sim" or m.startswith("robosteer.sim.")]
    assert sim, "no simulator modules found"
    wrong = [f"{m} imports {t} at {_where(m, t)}"
             for m in sim for t in sorted({t for t, _ in EDGES[m]}) if not allowed(t)]
    for m in sim:
        for node in ast.walk(TREES[m]):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = [n for n in SIM_MUST_NOT_NAME if n in node.value]
                if named:
                    wrong.append(f"{MODULES[m].relative_to(ROOT)}:{node.lineno} names {', '.join(named)} in a string")
    assert not wrong, "\n".join(wrong)


def test_no_file_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_command_line_help_imports_no_heavy_library():
    code = ("import sys, robosteer.cli as c; c.build_parser(); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"robosteer --help imports {out.stdout.strip()}"


@pytest.mark.parametrize("module", ["robosteer", "robosteer.sim", "robosteer.circuits", "robosteer.data"])
def test_importing_a_package_is_cheap(module):
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"
