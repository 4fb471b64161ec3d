"""collectors/discovery.py: every cgroup path pattern of cadvisor.md section 3.3."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model import Runtime
from collectors import discovery
from collectors.discovery import CgroupRef, classify, pod_uid_of, walk

ID = "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f"
UID = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(("cgroup", "runtime"), [
    # Docker, cgroupfs and systemd drivers (v1 and v2 alike)
    (f"/docker/{ID}", Runtime.DOCKER),
    (f"/system.slice/docker-{ID}.scope", Runtime.DOCKER),
    # Kubernetes: containerd, cgroupfs and systemd
    (f"/kubepods/burstable/pod{UID}/{ID}", Runtime.CONTAINERD),
    (f"/kubepods/pod{UID}/{ID}", Runtime.CONTAINERD),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
     Runtime.CONTAINERD),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope", Runtime.CONTAINERD),
    # Kubernetes: CRI-O, cgroupfs and systemd
    (f"/kubepods/besteffort/pod{UID}/crio-{ID}", Runtime.CRIO),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope",
     Runtime.CRIO),
    # Kubernetes with Docker (dockershim / cri-dockerd), systemd driver
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope",
     Runtime.DOCKER),
    # Podman, root and rootless
    (f"/machine.slice/libpod-{ID}.scope", Runtime.PODMAN),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", Runtime.PODMAN),
])
def test_runtime_containers(cgroup: str, runtime: Runtime) -> None:
    ref = classify(cgroup)
    assert ref is not None
    assert (ref.runtime, ref.container_id, ref.cgroup) == (runtime, ID, cgroup)


@pytest.mark.parametrize("cgroup", [
    f"/system.slice/var-lib-docker-overlay2-{ID}-merged.mount",
    "/system.slice/var-lib-docker-containers-abc-mounts-shm.mount",
    "/system.slice/run-docker-netns-5f6c1d.mount",
    f"/kubepods/besteffort/pod{UID}/crio-conmon-{ID}",
    f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope",
    f"/machine.slice/libpod-conmon-{ID}.scope",
    f"/machine.slice/libpod-{ID}.scope/container",
    f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
])
def test_ignored(cgroup: str) -> None:
    assert classify(cgroup) is None


@pytest.mark.parametrize(("cgroup", "pod_uid"), [
    ("/", ""),
    ("/docker", ""),
    ("/system.slice", ""),
    ("/system.slice/ssh.service", ""),
    ("/system.slice/docker.service", ""),
    ("/user.slice/user-1000.slice/session-3.scope", ""),
    ("/kubepods", ""),
    ("/kubepods.slice/kubepods-burstable.slice", ""),
    (f"/kubepods/burstable/pod{UID}", UID),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", UID),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice", UID),
    ("/machine.slice", ""),
    # a directory named "container" outside podman is an ordinary cgroup
    ("/lxc.payload.web/container", ""),
])
def test_raw(cgroup: str, pod_uid: str) -> None:
    assert classify(cgroup) == CgroupRef(cgroup, Runtime.RAW, "", pod_uid)


@pytest.mark.parametrize(("cgroup", "uid"), [
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope", UID),
    (f"/kubepods/burstable/pod{UID}/{ID}", UID),
    (f"/kubepods/pod{UID}/{ID}", UID),
    ("/kubepods/burstable/podnot-a-uid", ""),
    (f"/docker/{ID}", ""),
])
def test_pod_uid(cgroup: str, uid: str) -> None:
    assert pod_uid_of(cgroup) == uid
    if uid and (ref := classify(cgroup)) is not None:
        assert ref.pod_uid == uid


def test_short_or_uppercase_ids_are_not_containers() -> None:
    assert classify("/docker/" + ID[:63]).runtime is Runtime.RAW  # type: ignore[union-attr]
    assert classify("/docker/" + ID.upper()).runtime is Runtime.RAW  # type: ignore[union-attr]


def test_walk_every_hierarchy(tmp_path: Path) -> None:
    for d in ("memory/docker/a", "memory/system.slice/ssh.service", "cpu/docker/b", "pids"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "memory/docker/a/memory.stat").write_text("cache 0\n")
    (tmp_path / "cpu/docker/link").symlink_to(tmp_path / "memory")  # symlinks are not followed
    found = walk([str(tmp_path / "memory"), str(tmp_path / "cpu"), str(tmp_path / "pids"),
                  str(tmp_path / "missing")])
    assert found == {"/", "/docker", "/docker/a", "/system.slice", "/system.slice/ssh.service", "/docker/b"}


NESTED = ("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-a.scope",
          "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-b.scope",
          "machine.slice/libpod-c.scope/container", "docker/d", "docker/e", "init.scope")


def _nested_tree(root: Path) -> set[str]:
    for d in NESTED:
        (root / d).mkdir(parents=True)
        for name in ("cgroup.procs", "memory.stat", "cpu.stat"):
            (root / d / name).write_text("")
    expected = {"/"}
    for d in NESTED:
        parts = d.split("/")
        expected |= {"/" + "/".join(parts[: i + 1]) for i in range(len(parts))}
    return expected


def _count_scandir(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    listed: list[str] = []
    real = discovery.os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(discovery.os, "scandir", scandir)
    return listed


def test_walk_skips_listing_leaves_and_finds_nested_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _nested_tree(tmp_path)
    listed = _count_scandir(monkeypatch)
    assert walk([str(tmp_path)]) == expected
    leaves = {str(tmp_path / d) for d in NESTED}
    assert not leaves & set(listed)  # ext4/tmpfs count subdirectories: no leaf was listed
    assert len(listed) == len(expected) - len(leaves)


@pytest.mark.parametrize("links", [1, 2, 7], ids=["btrfs-like", "always-2", "arbitrary"])
def test_walk_without_meaningful_link_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: int) -> None:
    """btrfs and overlayfs report 1 for every directory, some FUSE filesystems anything: full walk."""
    expected = _nested_tree(tmp_path)
    monkeypatch.setattr(discovery, "_links", lambda path: links)
    assert walk([str(tmp_path)]) == expected


def test_walk_lists_skipped_leaves_after_a_disagreeing_count(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The root reports 2 links (a leaf's count) although it has children: its listing disagrees, so the
    count is not trusted for the rest of the walk and every leaf is listed."""
    expected = _nested_tree(tmp_path)
    real = discovery._links
    monkeypatch.setattr(discovery, "_links",
                        lambda path: 2 if str(getattr(path, "path", path)) == str(tmp_path) else real(path))
    listed = _count_scandir(monkeypatch)
    assert walk([str(tmp_path)]) == expected
    assert str(tmp_path / "docker/d") in listed and str(tmp_path / "init.scope") in listed
