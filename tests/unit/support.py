"""Helpers for the unit tests: run the agent's real pipeline on a fixture tree and read /metrics text."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.config import Config, load_config
from agent.model import ContainerSample, Snapshot
from agent.options import add_arguments
from agent.wiring import Agent, build, check_kinds, check_route
from tests.fixtures.trees import Tree


def config_from(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """``load_config`` exactly as the CLI calls it (flags parsed by the same argparse options)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args, unknown = parser.parse_known_args(list(argv))
    return load_config(args, environ={} if environ is None else environ, unknown=unknown, check_route=check_route,
                       check_kinds=check_kinds)


@dataclass
class Run:
    agent: Agent
    snapshot: Snapshot
    text: str

    def sample(self, cgroup: str) -> ContainerSample:
        found = [s for s in self.snapshot.containers if s.info.cgroup == cgroup]
        assert len(found) == 1, f"{cgroup} not in the snapshot: {self.cgroups()}"
        return found[0]

    def cgroups(self) -> list[str]:
        return [s.info.cgroup for s in self.snapshot.containers]

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return series(self.text, name, **labels)

    def value(self, name: str, **labels: str) -> float:
        return value(self.text, name, **labels)


def run_tree(tree: Tree, *flags: str, tmp: Path) -> Run:
    """``agent.wiring.build(config)`` then one ``agent.cycle()``, as the daemon's housekeeping does."""
    config = config_from(tree.args(*flags, state_dir=tmp / "state"))
    agent = build(config)
    snapshot = agent.cycle()
    assert snapshot is not None, "no cgroup hierarchy found in the tree"
    return Run(agent, snapshot, agent.renderer.render(snapshot))


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (\d+))?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample line as written: (name, labels, value). Exposition names are kept as is
    (prometheus_client's parser renames counter samples to ``*_total``), after checking that
    prometheus_client's parser accepts the whole text."""
    list(text_string_to_metric_families(text))
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def series(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples of ``name`` whose labels include ``labels`` (``id=`` may be given as ``id_=``)."""
    if "id_" in labels:
        labels["id"] = labels.pop("id_")
    return [(lab, val) for n, lab, val in parse(text) if n == name and all(lab.get(k) == v for k, v in labels.items())]


def value(text: str, name: str, **labels: str) -> float:
    found = series(text, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, found {found}"
    return found[0][1]
