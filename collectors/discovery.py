"""Container discovery from the cgroup tree: walk the hierarchies and say which runtime owns each cgroup.

Mirrors cAdvisor's factories (lib/container/*/factory.go): a basename holding a 64-hex id is a
runtime container (docker-, cri-containerd-, crio-, libpod- prefixes or a bare id), ``.mount``
units, conmon scopes and podman's nested ``container`` cgroup are ignored, everything else is a
raw cgroup, and ``/`` is always reported. Which raw cgroups are reported besides ``/`` is cAdvisor's
``--docker_only`` and ``--raw_cgroup_prefix_whitelist`` (``RawFilter``); ``reported`` applies it, so a raw cgroup
that is not kept is never read.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
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
        _walk_one(root, found)
    return found


def _links(path: str | os.DirEntry[str]) -> int:
    """A directory's link count (its own lstat; a DirEntry caches it)."""
    if isinstance(path, str):
        return os.lstat(path).st_nlink
    return path.stat(follow_symlinks=False).st_nlink


def _walk_one(root: str, found: set[str]) -> None:
    """Add the cgroups below ``root`` to ``found``, without listing leaf cgroups where it can tell them.

    On cgroupfs, cgroup2fs, ext4 and tmpfs a directory's link count is 2 + its subdirectories, so a
    cgroup with ``st_nlink == 2`` has no child cgroups: one lstat instead of listing its 20-40 files
    (most cgroups are leaves: every container). Other filesystems do not keep that count (btrfs and
    overlayfs report 1, some FUSE filesystems anything). So the count is only trusted while every
    directory listed agrees with it (the root first); at the first one that does not, the leaves
    skipped so far are listed after all and the rest of this root is walked in full.
    """
    cut = len(root)
    try:
        root_links = _links(root)
    except OSError:
        return  # no such hierarchy
    trusted = True
    skipped: list[str] = []
    stack = [(root, root_links)]
    while stack:
        current, links = stack.pop()
        subdirs = 0
        try:
            with os.scandir(current) as it:
                for entry in it:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    subdirs += 1
                    found.add(entry.path[cut:])
                    entry_links = 0
                    if trusted:
                        try:
                            entry_links = _links(entry)
                        except OSError:
                            continue  # removed while walking
                        if entry_links == 2:
                            skipped.append(entry.path)
                            continue
                    stack.append((entry.path, entry_links))
        except OSError:
            continue  # removed while walking
        if trusted and links != 2 + subdirs:
            trusted = False  # not a filesystem that counts subdirectories (or a cgroup came or went)
            stack.extend((path, 0) for path in skipped)
            skipped.clear()


def pod_uid_of(cgroup: str) -> str:
    match = _POD_UID.search(cgroup)
    return match.group(1).replace("_", "-") if match else ""


@functools.lru_cache(maxsize=1 << 16)  # a pure function of the path, asked for every cgroup every cycle
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


@dataclass(frozen=True, slots=True)
class RawFilter:
    """Which raw cgroups are reported, as cAdvisor's raw factory accepts them (lib/container/raw/factory.go,
    ``CanHandleAndAccept``): ``/`` always; with ``prefixes``, only the raw cgroups whose name (the ``id`` label)
    starts with one of them, plain string prefixes, with or without ``docker_only`` (cAdvisor's code applies its
    whitelist either way); else every raw cgroup unless ``docker_only``. Runtime containers (Docker,
    containerd/CRI, CRI-O, Podman) are not raw and always reported."""

    docker_only: bool = False
    prefixes: tuple[str, ...] = ()

    def keeps(self, cgroup: str) -> bool:
        if cgroup == "/":
            return True
        if self.prefixes:
            return cgroup.startswith(self.prefixes)
        return not self.docker_only


def reported(cgroups: Iterable[str], raw: RawFilter = RawFilter()) -> list[CgroupRef]:
    """The cgroups to read and report, in path order: each one ``classify`` does not ignore, less the raw
    cgroups that ``raw`` does not keep (a parent slice is not needed to report the containers below it)."""
    out = []
    keeps = raw.keeps
    for cgroup in sorted(cgroups):
        ref = classify(cgroup)
        if ref is not None and (ref.runtime is not Runtime.RAW or keeps(cgroup)):
            out.append(ref)
    return out
