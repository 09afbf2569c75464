"""The shape of the code: no import cycles, and the pure core imports nothing with I/O.

Every import counts, wherever it stands: at the top, inside a function (a lazy import) or
under `if TYPE_CHECKING:`. A cycle between modules, or between the packages below, fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "recorder", "monitoring")
# The pure kernel is a package of its own: everything may import it, it imports nothing of
# ours outside itself, and none of these (relay.core's rule in ../shared/architecture.md).
CORE = "relay.core"
IMPURE = ("asyncio", "aiortc", "aioice", "av", "aiohttp", "redis", "prometheus_client")

Graph = Mapping[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(module: str, path: Path) -> Iterator[str]:
    """Every module name an import statement anywhere in the file names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name imported from a module is that
    module; importing a package counts as importing its __init__)."""
    known = sources()
    return {
        module: {name for name in imported(module, path) if name in known and name != module}
        for module, path in known.items()
    }


def reachable(graph: Graph, start: str) -> set[str]:
    """Every node an import chain leads to from `start`."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def cycles(graph: Graph) -> list[list[str]]:
    """The groups of nodes that reach each other (strongly connected, more than one), sorted."""
    reach = {node: reachable(graph, node) for node in graph}
    groups = {
        tuple(sorted({node} | {other for other in reach[node] if node in reach.get(other, ())}))
        for node in graph
        if node in reach[node]
    }
    return sorted(list(group) for group in groups)


def package_of(module: str) -> str:
    """The unit of the package-level check: the pure core, else the top-level package."""
    return CORE if module == CORE or module.startswith(CORE + ".") else module.split(".")[0]


def package_graph(graph: Graph) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        mine = package_of(module)
        packages.setdefault(mine, set()).update(
            package_of(t) for t in targets if package_of(t) != mine
        )
    return packages


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: Graph, expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_lazy_and_type_checking_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from relay.rtc.upstream import Upstream\n"
        "def f():\n    from relay.cli import main\n"
    )
    names = set(imported("relay.rtc.mod", source))
    assert {"relay.rtc.upstream", "relay.cli"} <= names


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_no_package_imports_itself_back() -> None:
    packages = package_graph(import_graph())
    assert set(packages) == {CORE, *PACKAGES}
    assert cycles(packages) == []


def test_recorder_and_monitoring_depend_on_the_core_only() -> None:
    packages = package_graph(import_graph())
    assert packages["monitoring"] <= {CORE}
    assert packages["recorder"] <= {CORE, "monitoring"}


def test_the_core_imports_nothing_with_io() -> None:
    known = sources()
    for module, path in known.items():
        if package_of(module) != CORE:
            continue
        for name in imported(module, path):
            top = name.split(".")[0]
            assert top not in IMPURE, f"{module} imports {name}"
            if top in PACKAGES:
                assert package_of(name) == CORE, f"{module} imports {name}"
