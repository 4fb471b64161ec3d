"""The wheel ships every package of the agent and nothing else (pyproject lists them explicitly)."""

from __future__ import annotations

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
