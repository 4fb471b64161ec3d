"""collectors/discovery.py: every cgroup path pattern of cadvisor.md section 3.3."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model import Runtime
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
