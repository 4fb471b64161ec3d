"""Container discovery from the cgroup tree: walk the hierarchies and say which runtime owns each cgroup.

Mirrors cAdvisor's factories (lib/container/*/factory.go): a basename holding a 64-hex id is a
runtime container (docker-, cri-containerd-, crio-, libpod- prefixes or a bare id), ``.mount``
units, conmon scopes and podman's nested ``container`` cgroup are ignored, everything else is a
raw cgroup, and ``/`` is always reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from agent.model import Runtime

_ID = re.compile(r"([0-9a-f]{64})")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_IGNORED_PREFIXES = ("crio-conmon-", "libpod-conmon-")


@dataclass(frozen=True, slots=True)
class CgroupRef:
    cgroup: str
    runtime: Runtime
    container_id: str = ""
    pod_uid: str = ""


def walk(roots: list[str]) -> set[str]:
    """Every cgroup path (``/`` and below) present in any of the hierarchy mount dirs."""
    found = {"/"}
    for root in roots:
        stack = [root]
        cut = len(root)
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                            found.add(entry.path[cut:])
            except OSError:
                continue  # removed while walking
    return found


def pod_uid_of(cgroup: str) -> str:
    match = _POD_UID.search(cgroup)
    return match.group(1).replace("_", "-") if match else ""


def classify(cgroup: str) -> CgroupRef | None:
    """Which runtime owns ``cgroup``; None for cgroups that are never reported."""
    if cgroup == "/":
        return CgroupRef("/", Runtime.RAW)
    parent, _, base = cgroup.rpartition("/")
    if base.endswith(".mount") or base.startswith(_IGNORED_PREFIXES):
        return None
    if base == "container" and "libpod-" in parent:
        return None  # podman's nested cgroup: the libpod scope above it is the container
    match = _ID.search(base)
    if match is None:
        return CgroupRef(cgroup, Runtime.RAW, pod_uid=pod_uid_of(cgroup))
    cid = match.group(1)
    if base.startswith("docker-"):
        runtime = Runtime.DOCKER
    elif base.startswith("cri-containerd-"):
        runtime = Runtime.CONTAINERD
    elif base.startswith("crio-"):
        runtime = Runtime.CRIO
    elif base.startswith("libpod-"):
        runtime = Runtime.PODMAN
    elif "kubepods" in cgroup:
        runtime = Runtime.CONTAINERD  # cgroupfs driver: a bare id; Docker metadata overrides it
    else:
        runtime = Runtime.DOCKER
    return CgroupRef(cgroup, runtime, cid, pod_uid_of(cgroup))
