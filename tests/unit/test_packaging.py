"""The wheel ships every package of the agent and nothing else (pyproject lists them explicitly)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ROOTS = ("agent", "collectors", "exporters")


def _listed() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return set(tomllib.load(fh)["tool"]["setuptools"]["packages"])


def _on_disk() -> set[str]:
    found = set()
    for root in SHIPPED_ROOTS:
        for init in (ROOT / root).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_every_package_of_the_agent_is_listed() -> None:
    missing = _on_disk() - _listed()
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}: `pip install .` drops them"


def test_nothing_outside_the_agent_ships() -> None:
    listed = _listed()
    assert listed, "no packages listed"
    stray = {name for name in listed if name.split(".")[0] not in SHIPPED_ROOTS}
    assert not stray, f"packages outside agent/collectors/exporters listed: {sorted(stray)}"
    assert listed <= _on_disk(), f"listed packages without an __init__.py: {sorted(listed - _on_disk())}"


def _top_level_imports() -> set[str]:
    """The first component of every module the shipped code imports (also inside functions)."""
    found: set[str] = set()
    for root in SHIPPED_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_every_dependency_is_imported_by_the_shipped_code() -> None:
    """A dependency that no shipped module imports is only installed weight (psutil was, until #12)."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        requirements = tomllib.load(fh)["project"]["dependencies"]
    distributions = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}
    provides: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provides.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _top_level_imports()
    unused = sorted(d for d in distributions if not provides.get(d, {d.replace("-", "_")}) & imported)
    assert not unused, f"pyproject.toml depends on {unused}, which no module of {SHIPPED_ROOTS} imports"
