"""The package's imports flow one way: no cycles, and the layers keep their order.

The graph is read from the source with ``ast``: every ``import`` statement
anywhere in a module counts (inside functions and ``if TYPE_CHECKING:``
blocks too), since a deferred import that closes a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxrkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The cxrkit modules one import statement names (``a.b`` for ``from a import b``
    when ``a.b`` is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from . import x, from .y import z
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the cxrkit modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            names = _imported(node, name, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom) and names:
                submodules = [n for n in names[1:] if n in modules]
                # `from pkg import submodule` imports the submodule; any other
                # name comes from `pkg` itself.
                names = submodules + (
                    [names[0]] if len(submodules) < len(names) - 1 else []
                )
            targets |= {n for n in names if n in modules and n != name}
        # Importing a submodule runs its package's __init__ first, which
        # imports the whole subpackage: an edge to each package around a
        # target (not the module's own packages, already being imported, and
        # not the top-level cxrkit, which every import runs first).
        own = _packages(name) | {name}
        targets |= {p for t in targets for p in _packages(t) if p not in own}
        graph[name] = targets
    return graph


def _packages(module: str) -> set[str]:
    """The subpackages around ``module``: ``cxrkit.images`` for
    ``cxrkit.images._cache``; never the top-level ``cxrkit``."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules ending where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_deferred_and_relative_imports():
    tree = ast.parse("def f():\n    from . import io\n    from .cache import x\n")
    found = [
        _imported(node, "cxrkit.classifier", False)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    ]
    assert found == [["cxrkit", "cxrkit.io"], ["cxrkit.cache", "cxrkit.cache.x"]]


def test_package_has_no_import_cycles():
    graph = import_graph()
    assert graph.get("cxrkit.classifier")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_pixel_conversion_imports_nothing_from_cxrkit():
    assert import_graph()["cxrkit.images._pixels"] == set()


#: Module -> modules it must never reach, directly or through others.
#: docs/contributing/architecture.md lists each rule (tests/test_architecture_page.py).
LAYER_RULES: list[tuple[str, set[str]]] = [
    # decoding knows nothing of checks, caches, models or estimators
    (
        "cxrkit.images._reading",
        {"cxrkit.images._inputs", "cxrkit.images._cache", "cxrkit.classifier"},
    ),
    (
        "cxrkit.images._dicom",
        {"cxrkit.images._reading", "cxrkit.images._inputs", "cxrkit.images._cache"},
    ),
    # input checks do not decode
    (
        "cxrkit.images._inputs",
        {"cxrkit.images._reading", "cxrkit.images._dicom", "cxrkit.images._cache"},
    ),
    # training and model files are below the estimator
    ("cxrkit.training._fit", {"cxrkit.classifier", "cxrkit.persistence"}),
    ("cxrkit.persistence", {"cxrkit.classifier", "cxrkit"}),
]

#: The subpackages below the estimator, bottom to top: a module of one never
#: reaches a later one, nor the estimator.
ROOMS = ["cxrkit.images", "cxrkit.models", "cxrkit.training", "cxrkit.persistence"]


@pytest.mark.parametrize(("module", "never"), LAYER_RULES)
def test_layers_do_not_reach_up(module, never):
    graph = import_graph()
    reached = _reachable(graph, module)
    assert not reached & never, f"{module} reaches {sorted(reached & never)}"


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_import_downward(room):
    graph = import_graph()
    above = [*ROOMS[ROOMS.index(room) + 1 :], "cxrkit.classifier"]
    members = [m for m in graph if m == room or m.startswith(room + ".")]
    assert members, f"{room} has no modules"
    for module in members:
        reached = _reachable(graph, module)
        up = sorted(
            r for r in reached for a in above if r == a or r.startswith(a + ".")
        )
        assert not up, f"{module} (in {room}) reaches {up}"


def test_graph_counts_the_package_around_an_import():
    graph = import_graph()
    # cxrkit.models._net imports cxrkit.images._normalize, which runs
    # cxrkit/images/__init__.py first
    assert "cxrkit.images" in graph["cxrkit.models._net"]
    assert "cxrkit.images" not in graph["cxrkit.images._cache"]
