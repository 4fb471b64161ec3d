"""collectors/cgroups/mounts.py: mountinfo parsing and the v1 / hybrid / v2 layout decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.cgroups.mounts import (
    CgroupLayout,
    NoCgroupsError,
    discover_layout,
    layout_from_mounts,
    parse_mountinfo,
)
from tests.fixtures.trees import HOST_V1, SAMPLES

HYBRID = (HOST_V1 / "host/mountinfo").read_text()  # the capture host: v1 controllers + cgroup2 at unified
COMOUNTED = (SAMPLES / "mountinfo/v1-comounted").read_text()
V2 = (SAMPLES / "mountinfo/v2").read_text()
ROOT = Path("/rootfs")


def test_parse_mountinfo_keeps_only_cgroup_mounts() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert ("/", "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu") in mounts
    assert ("/", "/sys/fs/cgroup/unified", "cgroup2", "rw") in mounts
    assert ("/", "/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd") in mounts
    assert all(fstype in ("cgroup", "cgroup2") for _r, _m, fstype, _o in mounts)
    assert len(mounts) == 10  # the tmpfs at /sys/fs/cgroup, /proc, /dev... are not cgroup mounts


def test_hybrid_host_with_separate_cpu_and_cpuacct_is_v1() -> None:
    layout = layout_from_mounts(parse_mountinfo(HYBRID), ROOT)
    assert layout == CgroupLayout(version=1, v1={
        "cpu": "/rootfs/sys/fs/cgroup/cpu", "cpuacct": "/rootfs/sys/fs/cgroup/cpuacct",
        "cpuset": "/rootfs/sys/fs/cgroup/cpuset", "memory": "/rootfs/sys/fs/cgroup/memory",
        "blkio": "/rootfs/sys/fs/cgroup/blkio", "pids": "/rootfs/sys/fs/cgroup/pids",
    })
    # Discovery walks the memory and CPU-accounting hierarchies only (the others mirror them).
    assert layout.hierarchy_roots() == ["/rootfs/sys/fs/cgroup/memory", "/rootfs/sys/fs/cgroup/cpuacct"]


def test_comounted_cpu_cpuacct_share_one_dir() -> None:
    layout = layout_from_mounts(parse_mountinfo(COMOUNTED), ROOT)
    assert layout is not None and layout.version == 1
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == "/rootfs/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["hugetlb"] == "/rootfs/sys/fs/cgroup/hugetlb"
    assert "net_cls" not in layout.v1 and "name=systemd" not in layout.v1
    # Walked once, not twice.
    assert layout.hierarchy_roots() == ["/rootfs/sys/fs/cgroup/memory", "/rootfs/sys/fs/cgroup/cpu,cpuacct"]


def test_pure_v2() -> None:
    layout = layout_from_mounts(parse_mountinfo(V2), ROOT)
    assert layout == CgroupLayout(version=2, unified="/rootfs/sys/fs/cgroup")
    assert layout.hierarchy_roots() == ["/rootfs/sys/fs/cgroup"]


def test_escaped_mount_point() -> None:
    line = r"32 23 0:29 / /run/my\040cgroup rw - cgroup2 cgroup2 rw,nsdelegate" + "\n"
    assert parse_mountinfo(line) == [("/", "/run/my cgroup", "cgroup2", "rw,nsdelegate")]
    layout = layout_from_mounts(parse_mountinfo(line), Path("/"))
    assert layout is not None and layout.unified == "/run/my cgroup"


def test_optional_fields_before_the_separator() -> None:
    line = ("36 25 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:2 - cgroup2 cgroup2 "
            "rw,nsdelegate,memory_recursiveprot\n")
    assert parse_mountinfo(line) == [("/", "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate,memory_recursiveprot")]


def test_sub_cgroup_bind_mounts_are_not_hierarchy_roots() -> None:
    # Inside a cgroup namespace the mount's root is not "/": that is not the host hierarchy.
    line = "628 556 0:30 /../../../../.. /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert layout_from_mounts(parse_mountinfo(line), ROOT) is None


def test_discover_layout_from_tree(tmp_path: Path) -> None:
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/mountinfo").write_text(V2)
    assert discover_layout(tmp_path) == CgroupLayout(version=2, unified=str(tmp_path / "sys/fs/cgroup"))


def test_discover_layout_probes_without_mountinfo(tmp_path: Path) -> None:
    base = tmp_path / "sys/fs/cgroup"
    (base / "cpu,cpuacct").mkdir(parents=True)
    (base / "memory").mkdir()
    layout = discover_layout(tmp_path)
    assert layout.version == 1 and layout.v1["cpu"] == layout.v1["cpuacct"] == str(base / "cpu,cpuacct")


def test_discover_layout_nothing(tmp_path: Path) -> None:
    with pytest.raises(NoCgroupsError):
        discover_layout(tmp_path)
