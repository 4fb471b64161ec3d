"""The import layering of the shipped packages, read from their source (every import, also those inside functions;
not those under ``if TYPE_CHECKING:``, which never run):

- ``collectors`` and ``exporters`` never import each other;
- both import nothing of ``agent`` but the data model (``agent.model``), the parameter leaf (``agent.params``)
  and ``agent.waits``;
- the model, the parameter leaf and the waits import only the standard library;
- the clients of a running agent (``agent.top``, ``agent.tail`` and what they share, ``agent.client``) import no
  collector, exporter or agent internals: they talk to the agent over HTTP only;
- no module imports itself back through others (no cycles).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "collectors", "exporters")
LEAVES = ("agent.model", "agent.params", "agent.waits")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {imp for imp in _imports(path, name) if imp in modules and imp != name}
    return graph


GRAPH = _graph()


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_graph_sees_the_packages() -> None:
    # A walk that found nothing would pass every rule below.
    assert {"agent.wiring", "agent.model", "agent.params", "exporters.syslog.sink"} <= set(GRAPH)
    assert "agent.model" in GRAPH["exporters.syslog.sink"]


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if _top(n) in ("collectors", "exporters")))
def test_collectors_and_exporters_import_only_the_model_and_the_leaf_of_agent(name: str) -> None:
    other = "exporters" if _top(name) == "collectors" else "collectors"
    bad = sorted(imp for imp in GRAPH[name]
                 if _top(imp) == other or (_top(imp) == "agent" and imp not in LEAVES and imp != "agent"))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("leaf", LEAVES)
def test_the_leaves_import_only_the_standard_library(leaf: str) -> None:
    path = ROOT / (leaf.replace(".", "/") + ".py")
    outside = sorted(imp for imp in _imports(path, leaf)
                     if imp.split(".")[0] not in sys.stdlib_module_names and imp != "__future__")
    assert not outside, f"{leaf} imports {outside}"


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


CLIENTS = ("agent.client", "agent.top", "agent.top_data", "agent.tail")


@pytest.mark.parametrize("name", CLIENTS)
def test_the_clients_import_nothing_of_the_agents_insides(name: str) -> None:
    allowed = {"agent", "agent.params", *CLIENTS}
    bad = sorted(imp for imp in GRAPH[name] if imp not in allowed)
    assert not bad, f"{name} imports {bad}"
