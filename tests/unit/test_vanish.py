"""Containers vanishing or cgroup files going bad mid-cycle never fail the snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collectors import manager
from tests.unit.support import run_tree


@pytest.mark.parametrize("name", ["v1_docker_cgroupfs", "v2_docker_systemd", "v1_kubepods_crio"])
def test_container_removed_between_walk_and_read(name: str, make_tree, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(name)
    victim = next(c for k, c in tree.cgroups.items() if k not in ("root", "docker", "ssh", "pod"))
    real_walk = manager.walk

    def walk_then_remove(roots: list[str]) -> set[str]:
        found = real_walk(roots)
        assert victim in found
        for d in tree.cgroup_dirs(victim):  # every hierarchy's directory, as the kernel does on rmdir
            shutil.rmtree(d)
        return found

    monkeypatch.setattr(manager, "walk", walk_then_remove)
    r = run_tree(tree, tmp=tmp_path)
    assert victim not in r.cgroups()
    others = {c for k, c in tree.cgroups.items() if c != victim}
    assert others <= set(r.cgroups())
    assert r.snapshot.scrape_error is False
    assert f'id="{victim}"' not in r.text


def test_cgroup_listed_but_never_existed(make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree("v2_podman")
    ghost = "/machine.slice/libpod-" + "f" * 64 + ".scope"
    real_walk = manager.walk
    monkeypatch.setattr(manager, "walk", lambda roots: real_walk(roots) | {ghost})
    r = run_tree(tree, tmp=tmp_path)
    assert ghost not in r.cgroups()
    assert tree.cgroups["web"] in r.cgroups()


def test_container_vanishes_inside_the_read(make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The cgroup goes away while its files are being read (some read, the rest gone)."""
    tree = make_tree("v1_docker_cgroupfs")
    victim = tree.cgroups["labels"]
    from collectors.cgroups import reader as reader_mod

    real_read_file = reader_mod.read_file
    state = {"reads": 0}

    def read_file(path: str) -> bytes | None:
        if victim in path:
            state["reads"] += 1
            if state["reads"] == 3:  # after cpu.shares and the quota: the container is removed
                for d in tree.cgroup_dirs(victim):
                    shutil.rmtree(d)
        return real_read_file(path)

    monkeypatch.setattr(reader_mod, "read_file", read_file)
    r = run_tree(tree, tmp=tmp_path)
    assert state["reads"] >= 3
    assert tree.cgroups["limited"] in r.cgroups() and tree.cgroups["netshare"] in r.cgroups()
    if victim in r.cgroups():  # what was read before the removal may be served; never fake values
        stats = r.sample(victim).stats
        assert stats.memory is None and stats.blkio is None


@pytest.mark.parametrize(("relpath", "garbage"), [
    ("cpu/{cg}/cpu.shares", b"not a number\n"),
    ("memory/{cg}/memory.usage_in_bytes", b"\x00\x01\x02"),
    ("cpuacct/{cg}/cpuacct.usage_percpu", b"12 x 34\n"),
    ("pids/{cg}/pids.current", b"\n"),
])
def test_corrupted_cgroup_file_drops_only_that_container(relpath: str, garbage: bytes, make_tree,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    tree = make_tree("v1_docker_cgroupfs")
    victim = tree.cgroups["limited"]
    (tree.root / "sys/fs/cgroup" / relpath.format(cg=victim.lstrip("/"))).write_bytes(garbage)
    r = run_tree(tree, tmp=tmp_path)
    assert victim not in r.cgroups()
    assert {tree.cgroups["labels"], tree.cgroups["netshare"], "/"} <= set(r.cgroups())
    assert r.agent.collector.errors["cgroup_stats"] == 1  # type: ignore[union-attr]


def test_corrupted_v2_files(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree("v2_docker_systemd")
    base = tree.root / "sys/fs/cgroup"
    (base / tree.cgroups["api"].lstrip("/") / "cpu.max").write_bytes(b"   \n")
    (base / tree.cgroups["worker"].lstrip("/") / "cpu.pressure").write_bytes(b"some avg10=0.00 total=\nfull\n")
    r = run_tree(tree, tmp=tmp_path)
    assert tree.cgroups["api"] not in r.cgroups()  # ValueError from cpu.max, counted
    assert r.agent.collector.errors["cgroup_stats"] == 1  # type: ignore[union-attr]
    # a malformed PSI line is skipped; the rest of the container is served
    assert r.value("container_pressure_cpu_waiting_seconds_total", id_=tree.cgroups["worker"]) == 0


def test_corrupted_procfs_files_never_fail_the_snapshot(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree("v1_docker_cgroupfs")
    pid = tree.pids["labels"][0]
    (tree.root / f"proc/{pid}/net/dev").write_bytes(
        b"Inter-|\n face |\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  bad0: x x x x x x x x x x x x x x x x\n")
    (tree.root / f"proc/{pid}/limits").write_bytes(b"Max open files\n")
    r = run_tree(tree, tmp=tmp_path)
    cid = tree.cgroups["labels"]
    assert [lab["interface"] for lab, _v in r.series("container_network_receive_bytes_total", id_=cid)] == ["eth0"]
    assert r.series("container_ulimits_soft", id_=cid) == []
    assert r.value("container_processes", id_=cid) == 3
