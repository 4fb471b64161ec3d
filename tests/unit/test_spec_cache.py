"""Limit files (container_spec_*, container_threads_max) are read again when due, at once on a Docker event of the
container, and every value stays what an uncached read gives (collectors.cgroups.reader.SpecCache)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import zlib
from pathlib import Path

import pytest

from agent.model import ContainerInfo, ContainerStats
from agent.wiring import Agent, build
from collectors.cgroups import reader
from collectors.cgroups.reader import SPEC_MAX_AGE, SPEC_REFRESH_CYCLES, SpecCache
from tests.fixtures.trees import Tree
from tests.unit.support import config_from
from tests.unit.test_golden import GOLDEN, mask

MiB = 1024 * 1024


class Host:
    """The agent built on a fixture tree (no Docker socket: metadata from config.v2.json), cycled by hand."""

    def __init__(self, tree: Tree, tmp: Path) -> None:
        self.tree = tree
        self.agent: Agent = build(config_from(tree.args(state_dir=tmp / "state")))
        self.cycles = 0

    def cycle(self) -> dict[str, ContainerStats]:
        snapshot = self.agent.cycle()
        assert snapshot is not None
        self.cycles += 1
        return {s.info.cgroup: s.stats for s in snapshot.containers}

    @property
    def specs(self) -> SpecCache:
        assert self.agent.collector is not None
        return self.agent.collector.reader.specs

    def due(self, cgroup: str) -> bool:
        """Whether the next cycle re-reads ``cgroup``'s limits on the stagger alone (cycles count from 1)."""
        return (self.cycles + 1 + zlib.crc32(cgroup.encode())) % SPEC_REFRESH_CYCLES == 0

    def cycle_until_just_read(self, cgroup: str) -> None:
        """Cycle until the one just run re-read ``cgroup``'s limits on the stagger: the next ones will not."""
        while True:
            due = self.due(cgroup)
            self.cycle()
            if due:
                return

    def memory_limit_file(self, name: str) -> Path:
        cgroup = self.tree.cgroups[name].lstrip("/")
        if self.tree.version == 2:
            return self.tree.root / "sys/fs/cgroup" / cgroup / "memory.max"
        return self.tree.root / "sys/fs/cgroup/memory" / cgroup / "memory.limit_in_bytes"


TREES = [("v1_docker_cgroupfs", "limited"), ("v2_docker_systemd", "api")]


@pytest.mark.parametrize(("name", "container"), TREES)
def test_changed_limit_shows_when_due_and_not_before(name: str, container: str, make_tree,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    host = Host(make_tree(name), tmp_path)
    cg = host.tree.cgroups[container]
    old = host.cycle()[cg].spec.memory_limit
    assert old and old != 96 * MiB
    host.cycle_until_just_read(cg)
    host.memory_limit_file(container).write_text(f"{96 * MiB}\n")  # as `echo 100663296 > memory.max` would
    served = []
    for _ in range(SPEC_REFRESH_CYCLES):
        due = host.due(cg)
        served.append((due, host.cycle()[cg].spec.memory_limit))
    # Cached until the entry is due again, SPEC_REFRESH_CYCLES cycles after its last read, then the file's value.
    assert served == [(False, old)] * (SPEC_REFRESH_CYCLES - 1) + [(True, 96 * MiB)]


def test_limit_changes_within_max_age_even_between_due_cycles(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    host = Host(make_tree("v1_docker_cgroupfs"), tmp_path)
    host.cycle()  # builds the collector
    assert host.agent.collector is not None
    host.agent.collector.reader.specs = SpecCache(clock=lambda: now[0])
    host.cycles = 0  # the new cache counts its own cycles
    cg = host.tree.cgroups["limited"]
    host.cycle_until_just_read(cg)
    host.memory_limit_file("limited").write_text(f"{96 * MiB}\n")
    now[0] += SPEC_MAX_AGE - 0.5
    assert host.cycle()[cg].spec.memory_limit == 64 * MiB  # not due, not old enough
    now[0] += 0.5
    assert not host.due(cg)
    assert host.cycle()[cg].spec.memory_limit == 96 * MiB  # SPEC_MAX_AGE since the last read


def _apply_update_event(host: Host, cid: str) -> None:
    """The Engine API path: ``docker update`` emits ``update``; ``_apply`` inspects the container again."""
    docker = host.agent.docker
    docker.api_ok = True  # the event stream is followed: config.v2.json is not looked at any more

    async def inspect(session: object, container_id: str, driver: str) -> ContainerInfo:
        return dataclasses.replace(docker.containers[container_id])  # a fresh inspect: a new, equal template

    docker._inspect = inspect  # type: ignore[method-assign,assignment]
    asyncio.run(docker._apply(None, {"Type": "container", "Action": "update", "id": cid}, "vfs"))  # type: ignore[arg-type]


def _rewrite_config(host: Host, cid: str) -> None:
    """The disk path: ``docker update`` rewrites config.v2.json (and hostconfig.json)."""
    config = host.tree.root / "var/lib/docker/containers" / cid / "config.v2.json"
    mtime = config.stat().st_mtime + 5
    os.utime(config, (mtime, mtime))


@pytest.mark.parametrize("tell", [_apply_update_event, _rewrite_config], ids=["api_event", "config_v2_json"])
@pytest.mark.parametrize(("name", "container"), TREES)
def test_docker_update_shows_at_the_next_cycle(tell, name: str, container: str, make_tree,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    host = Host(make_tree(name), tmp_path)
    cg, cid = host.tree.cgroups[container], host.tree.ids[container]
    old = host.cycle()[cg].spec.memory_limit
    host.cycle_until_just_read(cg)
    host.memory_limit_file(container).write_text(f"{96 * MiB}\n")  # what the runtime writes for --memory 96m
    assert host.cycle()[cg].spec.memory_limit == old  # cached: the agent has not been told yet
    tell(host, cid)
    assert not host.due(cg)
    assert host.cycle()[cg].spec.memory_limit == 96 * MiB


@pytest.mark.parametrize(("name", "container"), TREES)
def test_vanished_cgroup_drops_its_entry(name: str, container: str, make_tree,  # type: ignore[no-untyped-def]
                                         tmp_path: Path) -> None:
    host = Host(make_tree(name), tmp_path)
    cg = host.tree.cgroups[container]
    host.cycle()
    assert cg in host.specs
    saved = tmp_path / "saved"
    dirs = host.tree.cgroup_dirs(container)
    for i, d in enumerate(dirs):  # every hierarchy's directory, as the kernel does on rmdir
        shutil.copytree(d, saved / str(i))
        shutil.rmtree(d)
    assert cg not in host.cycle()
    assert cg not in host.specs
    # The same cgroup path again (docker restart between two cycles) with another limit: read at once.
    for i, d in enumerate(dirs):
        shutil.copytree(saved / str(i), d)
    host.memory_limit_file(container).write_text(f"{96 * MiB}\n")
    assert host.cycle()[cg].spec.memory_limit == 96 * MiB


def test_cgroup_removed_between_walk_and_read_drops_its_entry(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host = Host(make_tree("v2_docker_systemd"), tmp_path)
    cg = host.tree.cgroups["api"]
    host.cycle()
    assert cg in host.specs
    host.specs.begin_cycle({cg})  # as if the walk had found it
    assert host.agent.collector is not None
    shutil.rmtree(host.tree.cgroup_dirs("api")[0])
    assert host.agent.collector.reader.read(cg) is None
    assert cg not in host.specs


def test_memory_only_v1_cgroup_stays_reported_from_the_cache(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A v1 cgroup in the memory hierarchy alone has no cgroup.procs where the reader looks (the cpu hierarchy):
    its limit files are what shows it exists, cached or not."""
    tree = make_tree("v1_docker_cgroupfs")
    memory_only = "/system.slice/memory-only.service"
    shutil.copytree(tree.root / "sys/fs/cgroup/memory/system.slice/ssh.service",
                    tree.root / "sys/fs/cgroup/memory" / memory_only.lstrip("/"))
    host = Host(tree, tmp_path)
    limits = [host.cycle()[memory_only].spec for _ in range(2 * SPEC_REFRESH_CYCLES)]
    assert all(spec == limits[0] and spec.has_memory and not spec.has_cpu for spec in limits)


@pytest.mark.parametrize("name", ["v1_docker_cgroupfs", "v2_docker_systemd"])
def test_cached_cycles_render_the_golden_output(name: str, make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host = Host(make_tree(name), tmp_path)
    golden = (GOLDEN / f"{name}.prom").read_text()
    for _ in range(SPEC_REFRESH_CYCLES + 1):  # the first cycle reads every limit, the next ones mostly the cache
        snapshot = host.agent.cycle()
        assert snapshot is not None
        assert mask(host.agent.renderer.render(snapshot)) == golden


def test_stagger_spreads_the_reads_evenly() -> None:
    cache = SpecCache(clock=lambda: 0.0)
    cgroups = {f"/docker/{i:064x}" for i in range(3000)}
    cache.begin_cycle(cgroups)
    for cg in cgroups:
        cache.put(cg, None, reader.Spec(), 0)
    for _ in range(SPEC_REFRESH_CYCLES):
        cache.begin_cycle(cgroups)
        due = sum(cache.get(cg, None) is None for cg in cgroups)
        assert abs(due - len(cgroups) / SPEC_REFRESH_CYCLES) < 0.05 * len(cgroups)
