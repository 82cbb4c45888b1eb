"""The contributors' architecture page matches the code.

``docs/contributing/architecture.md`` has a row for every module of the
package (its layer, and whether it is public or internal); no module imports
one from a higher layer; every layer rule of ``tests/test_imports.py`` is
listed on the page; and no API reference page documents an internal module.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxrkit"
PAGE = ROOT / "docs" / "contributing" / "architecture.md"
API = ROOT / "docs" / "api"

# A row of the module table: | `cxrkit.x` | layer | public/internal | ... |
ROW = re.compile(
    r"^\|\s*`(cxrkit(?:\.\w+)?)`\s*\|\s*(\d+)\s*\|\s*(public|internal)\s*\|"
)
# A mkdocstrings directive: ::: cxrkit.x.y
DIRECTIVE = re.compile(r"^:::\s*(cxrkit[\w.]*)", re.M)


def _test_imports():
    spec = importlib.util.spec_from_file_location(
        "_cxrkit_test_imports", Path(__file__).with_name("test_imports.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_modules(package: Path = PACKAGE) -> set[str]:
    """``cxrkit`` and its top-level modules and subpackages, from the files."""
    found = {"cxrkit"}
    for path in package.iterdir():
        if path.suffix == ".py" and path.name != "__init__.py":
            found.add(f"cxrkit.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists():
            found.add(f"cxrkit.{path.name}")
    return found


def page_table(text: str) -> dict[str, tuple[int, str]]:
    """Module -> (layer, "public" or "internal"), from the page's table."""
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = (int(match.group(2)), match.group(3))
    return rows


def top_level(module: str) -> str:
    return ".".join(module.split(".")[:2])


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports from a module to one in a higher layer, as 'a -> b'."""
    found = set()
    for module, targets in graph.items():
        for target in targets:
            a, b = top_level(module), top_level(target)
            if a != b and layers[b] > layers[a]:
                found.add(f"{a} (layer {layers[a]}) -> {b} (layer {layers[b]})")
    return sorted(found)


def rule_listed(text: str, module: str, never: set[str]) -> bool:
    """Whether one line of the page names ``module`` and every module in ``never``,
    each in backticks."""
    for line in text.splitlines():
        named = set(re.findall(r"`([^`]+)`", line))
        if module in named and never <= named:
            return True
    return False


def documented_modules(api: Path = API) -> dict[str, str]:
    """Object documented by a docs/api page -> the page's name."""
    return {
        name: page.name
        for page in sorted(api.glob("*.md"))
        for name in DIRECTIVE.findall(page.read_text())
    }


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[int, str]]:
    return page_table(PAGE.read_text())


def test_every_module_has_a_row(table):
    missing = package_modules() - set(table)
    assert not missing, f"describe {sorted(missing)} in {PAGE.relative_to(ROOT)}"
    stale = set(table) - package_modules()
    assert not stale, f"{sorted(stale)} are on the page but not in the package"


# A row of the table of the subpackages' modules: | `cxrkit.room._module` | ... |
ROOM_ROW = re.compile(r"^\|\s*`(cxrkit\.\w+\._\w+)`\s*\|", re.M)


def test_every_module_of_the_subpackages_below_the_estimator_has_a_row():
    rooms = _test_imports().ROOMS
    modules = {
        name
        for name in _test_imports().import_graph()
        if any(name.startswith(room + "._") for room in rooms)
    }
    rows = set(ROOM_ROW.findall(PAGE.read_text()))
    assert modules, "no modules found in the subpackages"
    assert not modules - rows, f"describe {sorted(modules - rows)} on the page"
    assert not rows - modules, f"{sorted(rows - modules)} are on the page only"


def test_no_module_imports_from_a_higher_layer(table):
    layers = {module: layer for module, (layer, _) in table.items()}
    graph = _test_imports().import_graph()
    assert not upward_imports(graph, layers)


def test_every_layer_rule_is_on_the_page():
    text = PAGE.read_text()
    for module, never in _test_imports().LAYER_RULES:
        assert rule_listed(text, module, never), f"rule for {module} not listed"
    assert rule_listed(text, "cxrkit.images._pixels", set()), "pixels import nothing"
    for room in _test_imports().ROOMS:
        assert rule_listed(text, room, set()), f"the rule for {room} is not listed"


def test_api_reference_documents_no_internal_module(table):
    internal = {m for m, (_, surface) in table.items() if surface == "internal"}
    wrong = {
        name: page
        for name, page in documented_modules().items()
        if top_level(name) in internal
    }
    assert not wrong, f"internal modules in the API reference: {wrong}"


def test_every_public_module_is_in_the_api_reference(table):
    documented = {top_level(name) for name in documented_modules()}
    # Top-level names (``::: cxrkit.PneumoniaClassifier``) document their
    # home module; the command line has its guide page instead.
    init = (PACKAGE / "__init__.py").read_text()
    for home, names in re.findall(r"^from (cxrkit\.\w+) import (.+)$", init, re.M):
        if any(f"cxrkit.{n.strip()}" in documented_modules() for n in names.split(",")):
            documented.add(home)
    public = {m for m, (_, surface) in table.items() if surface == "public"}
    missing = public - documented - {"cxrkit", "cxrkit.cli"}
    assert not missing, f"public modules without an API reference page: {missing}"


def test_checks_fail_on_a_wrong_page(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "io.py").write_text("")
    (tmp_path / "newmodule.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "notapackage").mkdir()
    assert package_modules(tmp_path) == {
        "cxrkit",
        "cxrkit.io",
        "cxrkit.newmodule",
        "cxrkit.sub",
    }
    page = (
        "| `cxrkit.io` | 1 | public | decoding |\n| `cxrkit.net` | 3 | internal | x |\n"
    )
    assert page_table(page) == {
        "cxrkit.io": (1, "public"),
        "cxrkit.net": (3, "internal"),
    }
    layers = {"cxrkit.io": 1, "cxrkit.net": 3}
    assert upward_imports({"cxrkit.io": {"cxrkit.net"}}, layers)
    assert not upward_imports({"cxrkit.net": {"cxrkit.io"}}, layers)
    assert rule_listed("* `a` never reaches `b` or `c`", "a", {"b", "c"})
    assert not rule_listed("* `a` never reaches `b`\n* `c`", "a", {"b", "c"})
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "x.md").write_text("# X\n\n::: cxrkit.net.Thing\n")
    assert documented_modules(tmp_path / "api") == {"cxrkit.net.Thing": "x.md"}
