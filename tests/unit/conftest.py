"""Fixtures for the unit tests: fixture trees built into tmp dirs (see tests/fixtures/trees.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures import trees  # noqa: E402


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[str], trees.Tree]:
    """``make_tree("v2_docker_systemd")`` writes that fixture tree under ``tmp_path`` and returns it."""

    def make(name: str) -> trees.Tree:
        return trees.build(name, tmp_path / name)

    return make
